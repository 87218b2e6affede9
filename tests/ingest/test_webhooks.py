"""Webhook signatures, outbox rows and URL rules (pure parts of ingest/webhooks.py)."""

from __future__ import annotations

import hashlib
import hmac
import random
import uuid
from datetime import UTC, datetime

import pytest
from psycopg.types.json import Jsonb

from ingest.webhooks import (
    PAUSE_MAX_S,
    RETRY_BASE_S,
    RETRY_MAX_S,
    ReceiverHealth,
    backoff_s,
    outbox_rows,
    sign,
    type_event_id,
    url_problem,
)

T = datetime(2026, 11, 24, 14, 32, 10, tzinfo=UTC)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"event_id":"e","type":"parcel.status"}'
    want = hmac.new(b"s3cret-s3cret-s3cret", b"1795530730." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret-s3cret-s3cret", 1795530730, body) == "sha256=" + want
    assert sign("another-secret-0000", 1795530730, body) != "sha256=" + want


def test_each_event_and_type_gets_its_own_id_and_no_van_leaks() -> None:
    eid = uuid.uuid4()
    event = (T, eid, "MP100200300", "Exception", "Exception_LATE", "VAN-1", "S-17", 13.4,
             52.5, Jsonb({"evidence": "eta", "late_by_s": 60}))
    eta = (T, "MP100200300", T, T, T, 0.8)
    [(ids, types, numbers, bodies)] = outbox_rows([event], [eta])
    assert types == ["parcel.status", "exception", "parcel.eta"]
    assert len(set(ids)) == 3 and ids[0] == type_event_id(eid, "parcel.status")
    assert numbers == ["MP100200300"] * 3
    status = bodies[0].obj
    assert status == {"event_id": str(ids[0]), "type": "parcel.status",
                      "occurred_at": "2026-11-24T14:32:10Z", "data": {
                          "tracking_number": "MP100200300", "status": "Exception",
                          "sub_status": "Exception_LATE", "stop_id": "S-17",
                          "detail": {"evidence": "eta", "late_by_s": 60}}}  # fmt: skip
    assert "VAN-1" not in repr(bodies) and "13.4" not in repr(bodies)
    assert bodies[2].obj["data"]["eta_earliest"] == "2026-11-24T14:32:10Z"
    assert outbox_rows([], []) == []


@pytest.mark.parametrize(("url", "ok"), [
    ("https://93.184.215.14/hook", True),  # a public address (nothing is sent)
    ("http://127.0.0.1:8080/hook", False), ("https://10.1.2.3/", False),
    ("https://192.168.0.10/", False), ("https://169.254.169.254/latest", False),
    ("https://[::1]/", False), ("https://[::ffff:10.0.0.1]/", False), ("https://0.0.0.0/", False),
    ("ftp://example.com/", False), ("https:///nohost", False),
])  # fmt: skip
def test_private_and_loopback_targets_are_refused_unless_allowed(url: str, ok: bool) -> None:
    assert (url_problem(url, allow_private=False) is None) == ok
    if url.startswith("http") and "///" not in url:
        assert url_problem(url, allow_private=True) is None


def test_a_name_that_resolves_to_loopback_is_refused() -> None:
    problem = url_problem("http://localhost:9/hook", allow_private=False)
    assert problem is not None and "MILEPOST_WEBHOOK_ALLOW_PRIVATE" in problem


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    waits = [backoff_s(k, rng) for k in range(1, 30)]
    assert RETRY_BASE_S * 0.8 <= waits[0] <= RETRY_BASE_S * 1.2
    assert 2 * RETRY_BASE_S * 0.8 <= waits[1] <= 2 * RETRY_BASE_S * 1.2
    assert max(waits) <= RETRY_MAX_S * 1.2 and waits[-1] >= RETRY_MAX_S * 0.8


def test_a_failing_receiver_is_paused_longer_each_time_until_it_answers() -> None:
    health = ReceiverHealth(random.Random(3))
    assert health.failing() == [] and health.due(0.0) == []
    pauses = [health.failed(7, now=100.0 * k) for k in range(1, 12)]
    assert pauses[0] == pytest.approx(RETRY_BASE_S, rel=0.2)
    assert pauses[1] == pytest.approx(2 * RETRY_BASE_S, rel=0.2)
    assert max(pauses) == PAUSE_MAX_S  # capped: a receiver that comes back is noticed
    health.failed(9, now=1100.0)
    assert health.failing() == [7, 9]
    assert health.due(1100.0) == []  # both pausing
    # due once the pause is over, the one waiting longest first
    assert health.due(1100.0 + PAUSE_MAX_S + 1) == [9, 7]
    assert health.due(1100.0 + 3.0) == [9]
    health.idle(9, now=1103.0)  # nothing of it was due: not looked at again at once
    assert health.due(1103.0) == []
    health.succeeded(9)
    assert health.failing() == [7] and 9 not in health.due(1e9)
    health.idle(9, now=0.0)  # a healthy one stays healthy
    assert health.failing() == [7]


def test_customers_see_no_fleet_detail() -> None:
    event = (T, uuid.uuid4(), "MP100200300", "Exception", "Exception_LEFT_BEHIND", None, "S-17",
             None, None, Jsonb({"planned_vehicle_id": "VAN-7", "candidates": 2,
                                "confidence": 0.6, "evidence": "gate"}))
    [(_, _, _, bodies)] = outbox_rows([event], [])
    assert [b.obj["data"]["detail"] for b in bodies] == [{"evidence": "gate"}] * 2
