"""An OpenAPI-driven fuzzer (schemathesis) against a running API with each role's key: no
5xx, and every response matches the documented schema."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import Proc, free_port


@pytest.fixture(scope="module")
def fuzz_api(spawn: Callable[..., Proc]) -> str:
    port = free_port()  # no rate limit here: a 429 would hide what the fuzzer is after
    api = spawn("api", extra_env={"MILEPOST_API_ADDR": f"127.0.0.1:{port}",
                                  "MILEPOST_RATE_LIMIT_PER_S": "0"})  # fmt: skip
    api.wait_for("Uvicorn running")
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("role", ["dispatcher", "customer", "device", "admin"])
def test_no_server_errors_and_responses_match_the_schema(
    fuzz_api: str, cli: Callable[..., str], role: str
) -> None:
    key = cli("keys", "create", "--role", role)
    exe = Path(sys.executable).with_name("schemathesis")
    out = subprocess.run(
        [str(exe), "--no-color", "run", f"{fuzz_api}/openapi.json",
         "-H", f"Authorization: Bearer {key}",
         "--checks", "not_a_server_error,response_schema_conformance",
         "--max-examples", "15", "--seed", "20261201", "--exclude-path", "/v1/live"],
        capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout
