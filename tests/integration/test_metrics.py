"""GET /metrics: Prometheus text with the API's request latencies, the live stream, the
webhook backlog and the running ingest's counters (through ingest_stats)."""

from __future__ import annotations

import re

import httpx

from tests.integration.conftest import Proc, wait_until


def test_metrics_has_requests_ingest_counters_and_backlog(
    ingest: Proc, api_url: str, env: dict[str, str]
) -> None:
    assert httpx.get(f"{api_url}/healthz").status_code in (200, 503)
    instance = env["MILEPOST_MQTT_CLIENT_ID"]

    def text() -> str:
        r = httpx.get(f"{api_url}/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        return r.text

    wait_until(lambda: f'milepost_ingest_fixes_stored_total{{instance="{instance}"}}' in text(),
               timeout=15, what="the session ingest's counters")  # fmt: skip
    body = text()
    assert re.search(r'milepost_http_request_duration_seconds_bucket\{le="0.005",'
                     r'method="GET",route="/healthz",status="[25]xx"\} \d', body)  # fmt: skip
    assert "# TYPE milepost_ingest_messages_received_total counter" in body
    assert re.search(rf'milepost_ingest_broker_connected{{instance="{instance}"}} 1.0', body)
    age = re.search(rf'milepost_ingest_stats_age_seconds{{instance="{instance}"}} ([0-9.]+)', body)
    assert age is not None and float(age.group(1)) < 10
    assert re.search(r"^milepost_webhook_backlog \d+", body, re.M)
    assert re.search(r"^milepost_live_listening 1", body, re.M)
    assert re.search(r"^milepost_database_up 1", body, re.M)
