"""Request size limits: a body over MILEPOST_API_MAX_BODY_BYTES is a 413 in the error
format, before it is read whole; the day's manifest has a limit of its own."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from api.routes.manifest import MAX_BYTES


def test_bodies_over_the_limit_are_413(api_url: str, cli: Callable[..., str]) -> None:
    device = {"Authorization": f"Bearer {cli('keys', 'create', '--role', 'device')}"}
    dispatcher = {"Authorization": f"Bearer {cli('keys', 'create', '--role', 'dispatcher')}"}
    big = b'{"x": "' + b"a" * (2 << 20) + b'"}'  # 2 MiB, over the 1 MiB default
    for method, path, headers in (("POST", "/v1/pod", device),
                                  ("POST", "/v1/webhooks", dispatcher)):  # fmt: skip
        r = httpx.request(method, api_url + path, content=big, headers={
            **headers, "Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 413, (path, r.status_code, r.text[:200])
        assert r.json()["error"]["code"] == "too_large"
    # sent chunked, with no Content-Length: counted as it arrives, the same answer
    chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))
    r = httpx.post(f"{api_url}/v1/pod", content=chunks,
                   headers={**device, "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text[:200]
    # the same size is a manifest's to send: read, and judged on its content
    r = httpx.put(f"{api_url}/v1/manifest", content=big,
                  headers={**dispatcher, "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_manifest", r.text[:300]
    assert len(big) < MAX_BYTES
