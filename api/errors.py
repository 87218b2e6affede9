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


def response_for(exc: Exception) -> JsonResponse | None:
    """The error format's answer to an exception a handler let out, or None when it is not
    one of ours (a bug: the server's 500)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    if isinstance(exc, StarletteHTTPException):
        return error_response(exc.status_code, _CODES.get(exc.status_code, "error"),
                              str(exc.detail), exc.headers)  # fmt: skip
    if isinstance(exc, psycopg.OperationalError):
        return error_response(503, "unavailable", "the database is unavailable; retry shortly",
                              {"Retry-After": "5"})  # fmt: skip
    if isinstance(exc, psycopg.DataError):
        # a value the database cannot hold (a NUL in text, a date out of range): the
        # request's fault, not the server's
        return error_response(422, "invalid_request", f"a value cannot be stored: {exc}")
    return None


def install(app: FastAPI) -> None:
    async def _ours(_: Request, exc: Exception) -> JsonResponse:
        response = response_for(exc)
        if response is None:  # registered only for the exceptions it answers
            raise exc
        return response

    for exc_class in (ApiError, StarletteHTTPException, psycopg.OperationalError,
                      psycopg.DataError):
        app.add_exception_handler(exc_class, _ours)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JsonResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path"))
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return error_response(422, "invalid_request", "; ".join(parts))
