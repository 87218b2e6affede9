"""The API's one error format: ``{"error": {"code": "...", "message": "..."}}``."""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.responses import JsonResponse


class ApiError(Exception):
    """Raised by handlers; rendered as the JSON error format with its status."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 413: "too_large", 422: "invalid_request",
          429: "rate_limited", 503: "unavailable"}  # fmt: skip


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None) -> JsonResponse:  # fmt: skip
    return JsonResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JsonResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JsonResponse:
        code = _CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(psycopg.OperationalError)
    async def _db_down(_: Request, exc: psycopg.OperationalError) -> JsonResponse:
        return error_response(503, "unavailable", "the database is unavailable; retry shortly",
                              {"Retry-After": "5"})  # fmt: skip

    @app.exception_handler(psycopg.DataError)
    async def _bad_value(_: Request, exc: psycopg.DataError) -> JsonResponse:
        # a value the database cannot hold (a NUL in text, a date out of range): the
        # request's fault, not the server's
        return error_response(422, "invalid_request", f"a value cannot be stored: {exc}")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JsonResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path"))
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return error_response(422, "invalid_request", "; ".join(parts))
