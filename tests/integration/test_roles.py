"""The role matrix: each role's key against each endpoint gives the documented status, and
per-key rate limits answer 429 with Retry-After."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.integration.conftest import Proc, free_port

# endpoint -> the roles it admits (admin always); everyone else: 403, no key: 401
MATRIX: list[tuple[str, str, set[str]]] = [
    ("GET", "/v1/vehicles", {"dispatcher"}),
    ("GET", "/v1/vehicles/NOPE-1/track", {"dispatcher"}),
    ("GET", "/v1/parcels", {"dispatcher"}),
    ("GET", "/v1/parcels/NOSUCH-PARCEL", {"customer", "dispatcher"}),
    ("GET", "/v1/exceptions", {"dispatcher"}),
    ("GET", "/v1/manifest", {"dispatcher"}),
    ("PUT", "/v1/manifest", {"dispatcher"}),
    ("GET", "/v1/webhooks", {"customer", "dispatcher"}),
    ("POST", "/v1/webhooks", {"customer", "dispatcher"}),
    ("DELETE", "/v1/webhooks/999999999", {"customer", "dispatcher"}),
    ("GET", "/v1/epcis/events?since=2026-01-01T00:00:00Z", {"dispatcher"}),
    ("POST", "/v1/pod", {"device", "dispatcher"}),
]
ROLES = ("dispatcher", "customer", "device", "admin")


@pytest.fixture(scope="module")
def keys(cli: Callable[..., str]) -> dict[str, str]:
    return {role: cli("keys", "create", "--role", role, "--name", f"matrix-{role}")
            for role in ROLES}


@pytest.mark.parametrize(("method", "path", "admitted"), MATRIX)
def test_each_role_against_each_endpoint(api_url: str, keys: dict[str, str], method: str,
                                         path: str, admitted: set[str]) -> None:  # fmt: skip
    for role, key in [("none", None), *keys.items()]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        r = httpx.request(method, api_url + path, headers=headers, json={})
        if key is None:
            assert r.status_code == 401, (role, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
        elif role in admitted or role == "admin":
            assert r.status_code not in (401, 403, 500), (role, r.status_code, r.text)
        else:
            assert r.status_code == 403, (role, r.status_code, r.text)
            assert r.json()["error"]["code"] == "forbidden"


def test_revoked_and_unknown_keys_are_401(api_url: str, cli: Callable[..., str]) -> None:
    key = cli("keys", "create", "--role", "dispatcher")
    assert httpx.get(f"{api_url}/v1/vehicles", headers={"Authorization": f"Bearer {key}"}
                     ).status_code == 200  # fmt: skip
    cli("keys", "revoke", key.split("_")[1])
    for bad in (key, "mp_00000000_nope", "garbage"):
        r = httpx.get(f"{api_url}/v1/vehicles", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_a_key_over_its_rate_gets_429_with_retry_after(spawn: Callable[..., Proc],
                                                       cli: Callable[..., str]) -> None:
    port = free_port()
    api = spawn("api", extra_env={"MILEPOST_API_ADDR": f"127.0.0.1:{port}",
                                  "MILEPOST_RATE_LIMIT_PER_S": "0.5",
                                  "MILEPOST_RATE_LIMIT_BURST": "3"})  # fmt: skip
    api.wait_for("Uvicorn running")
    url = f"http://127.0.0.1:{port}/v1/vehicles"
    fast, other = (cli("keys", "create", "--role", "dispatcher") for _ in range(2))
    got = [httpx.get(url, headers={"Authorization": f"Bearer {fast}"}) for _ in range(4)]
    assert [r.status_code for r in got] == [200, 200, 200, 429]
    assert got[3].json()["error"]["code"] == "rate_limited"
    assert 1 <= int(got[3].headers["retry-after"]) <= 2
    assert httpx.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 200
    api.stop()
