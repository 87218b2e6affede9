"""JSON responses rendered with orjson (FastAPI's own ORJSONResponse is deprecated)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

JSON = "application/json"


class JsonResponse(JSONResponse):
    """A JSONResponse (so the OpenAPI document shows the models) rendered by orjson."""

    media_type = JSON

    @staticmethod
    def encode(content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z)

    def render(self, content: Any) -> bytes:
        return self.encode(content)
