"""GET /v1/epcis/events pages with a keyset cursor: nothing repeated or skipped at a page
boundary, even when more events share one time than a page holds."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from tests.api.test_epcis import errors, load_validator


def test_pages_of_events_sharing_a_time(api_url: str, cli: Callable[..., str],
                                        db: psycopg.Connection) -> None:  # fmt: skip
    tag = secrets.token_hex(3).upper()
    t0 = datetime(2031, 5, 5, 8, 0, tzinfo=UTC) + timedelta(microseconds=secrets.randbelow(10**6))
    times = [t0] * 5 + [t0 + timedelta(microseconds=1)] * 2 + [t0 + timedelta(seconds=1)]
    with db.cursor() as cur:
        for i, t in enumerate(times):
            cur.execute("INSERT INTO gate_pass (time, gate_id, epc, last_seen, direction, reads)"
                        " VALUES (%s, %s, %s, %s, 'out', 3)",
                        (t, f"G-{tag}-{i % 2}", f"3034{tag}{i:014X}", t))  # fmt: skip
    db.commit()
    key = cli("keys", "create", "--role", "dispatcher")
    auth = {"Authorization": f"Bearer {key}"}
    url = f"{api_url}/v1/epcis/events"

    whole = httpx.get(url, params={"since": t0.isoformat()}, headers=auth)
    assert whole.status_code == 200 and "x-next-cursor" not in whole.headers
    ids = [e["eventID"] for e in whole.json()["epcisBody"]["eventList"]]
    assert len(ids) == len(set(ids)) == len(times)

    for limit in (1, 2, 3):
        paged, cursor, pages = [], None, 0
        while True:
            params = {"since": t0.isoformat(), "limit": limit}
            if cursor:
                params["cursor"] = cursor
            r = httpx.get(url, params=params, headers=auth)
            assert r.status_code == 200, r.text
            assert errors(load_validator(), r.json()) == []
            paged += [e["eventID"] for e in r.json()["epcisBody"]["eventList"]]
            pages += 1
            cursor = r.headers.get("x-next-cursor")
            if cursor is None:
                break
        assert paged == ids, limit
        assert pages == -(-len(times) // limit)

    # a cursor not given by the API is the caller's error, in the error format
    r = httpx.get(url, params={"since": t0.isoformat(), "cursor": "bm90LWEtY3Vyc29y"},
                  headers=auth)  # fmt: skip
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
