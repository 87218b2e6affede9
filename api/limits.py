"""Request body limits: a body over its path's limit is a ``413 too_large`` in the error
format, and is not read further.

A declared ``Content-Length`` over the limit is answered before the handler runs; a body
sent without one (chunked) is counted as it arrives, and the read that goes over raises
the 413 inside the handler (FastAPI lets an ``HTTPException`` from the body through).
(FastAPI's own ``max_body_size`` answers in plain text instead of the error format.)
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response


class BodyLimit:
    def __init__(self, app: ASGIApp, default: int, per_path: Mapping[str, int]) -> None:
        self.app, self.default, self.per_path = app, default, dict(per_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.default)
        too_large = f"request body over {limit} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await error_response(413, "too_large", too_large)(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, too_large)
            return message

        await self.app(scope, limited, send)
