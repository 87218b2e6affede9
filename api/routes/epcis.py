"""``GET /v1/epcis/events?since=``: the parcels' journey as a GS1 EPCIS 2.0 JSON-LD
``EPCISDocument`` (READERS.md section 4; CBV 2.0 bare names).

| what milepost saw | EPCIS event | action | bizStep | disposition |
| --- | --- | --- | --- | --- |
| a gate pass out through a dock door | ObjectEvent | OBSERVE | ``departing`` | ``in_transit`` |
| a gate pass in through a dock door | ObjectEvent | OBSERVE | ``arriving`` | ``in_progress`` |
| a gate pass of unknown direction | ObjectEvent | OBSERVE | (none) | (none) |
| a parcel bound to a van (loaded) | AggregationEvent | ADD | ``loading`` | ``in_transit`` |
| a delivery | ObjectEvent | OBSERVE | ``accepting`` | (none); destination: the stop |

Identifiers: parcels by their EPC's pure-identity URN (``urn:epc:id:sscc:...``,
``urn:epc:id:sgtin:...``), or the raw tag URI (``urn:epc:raw:<bits>.x<hex>``) when the tag
is not a GS1 EPC; a van by its tag's pure identity, else ``urn:milepost:vehicle:<id>``;
read points and locations ``urn:milepost:gate:<id>`` and ``urn:milepost:stop:<id>`` (the
manifest has no GLNs). Event ids are ``urn:uuid:`` UUIDv5 of the stored row's identity,
so the same event always has the same id. Times are UTC (``eventTimeZoneOffset``
``+00:00``). Events are ordered by ``eventTime`` (then by kind and stored identity, so
the order is total); a long export continues with the opaque ``cursor`` of the header
``X-Next-Cursor``, which starts exactly after the page's last event: no event is
repeated or skipped at a page boundary, however many share a time.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from psycopg_pool import AsyncConnectionPool

from api.deps import pool, require
from api.errors import ApiError
from api.responses import JsonResponse
from devices.epc import decode_epc

router = APIRouter(prefix="/v1/epcis", tags=["epcis"])
CONTEXT: Final = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
NAMESPACE: Final = uuid.UUID("6d696c65-706f-7374-2d65-706369732e31")
MAX_EVENTS: Final = 10_000
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND: Final = timedelta(microseconds=1)


def _time(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epc_uri(epc_hex: str) -> str:
    info = decode_epc(epc_hex)
    if info.pure_identity_urn:
        return info.pure_identity_urn
    return f"urn:epc:raw:{len(epc_hex) * 4}.x{epc_hex.upper()}"


def _event(kind: str, key: str, t: datetime, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "eventID": f"urn:uuid:{uuid.uuid5(NAMESPACE, key)}",
            "eventTime": _time(t), "eventTimeZoneOffset": "+00:00", **fields}  # fmt: skip


def pass_event(t: datetime, gate_id: str, epc: str, direction: str,
               dock_stop_id: str | None) -> dict[str, Any]:  # fmt: skip
    fields: dict[str, Any] = {"action": "OBSERVE", "epcList": [epc_uri(epc)],
                              "readPoint": {"id": f"urn:milepost:gate:{gate_id}"}}
    if direction == "out":
        fields |= {"bizStep": "departing", "disposition": "in_transit"}
    elif direction == "in":
        fields |= {"bizStep": "arriving", "disposition": "in_progress"}
    if dock_stop_id:
        fields["bizLocation"] = {"id": f"urn:milepost:stop:{dock_stop_id}"}
    return _event("ObjectEvent", f"pass|{gate_id}|{epc}|{t.isoformat()}", t, **fields)


def loading_event(t: datetime, event_id: str, epc: str, vehicle_id: str,
                  vehicle_epc: str | None) -> dict[str, Any]:  # fmt: skip
    parent = vehicle_epc and decode_epc(vehicle_epc).pure_identity_urn
    return _event("AggregationEvent", f"loading|{event_id}", t, action="ADD",
                  parentID=parent or f"urn:milepost:vehicle:{vehicle_id}",
                  childEPCs=[epc_uri(epc)], bizStep="loading", disposition="in_transit")


def delivery_event(t: datetime, event_id: str, epc: str, stop_id: str | None
                   ) -> dict[str, Any]:  # fmt: skip
    fields: dict[str, Any] = {"action": "OBSERVE", "epcList": [epc_uri(epc)],
                              "bizStep": "accepting"}
    if stop_id:
        where = f"urn:milepost:stop:{stop_id}"
        fields |= {"bizLocation": {"id": where},
                   "destinationList": [{"type": "possessing_party", "destination": where}]}
    return _event("ObjectEvent", f"delivery|{event_id}", t, **fields)


def document(events: list[dict[str, Any]], created: datetime) -> dict[str, Any]:
    return {"@context": [CONTEXT], "type": "EPCISDocument", "schemaVersion": "2.0",
            "creationDate": _time(created), "epcisBody": {"eventList": events}}  # fmt: skip


_EVENTS_SQL: Final = (
    "SELECT * FROM ("
    " SELECT 'pass' AS kind, g.time, g.gate_id || '|' || g.epc AS key, g.gate_id, g.epc,"
    " g.direction, gt.dock_stop_id, NULL AS vehicle_epc"
    " FROM gate_pass g LEFT JOIN gate gt USING (gate_id) WHERE g.time >= %(since)s"
    " UNION ALL"
    " SELECT CASE WHEN e.status = 'Delivered' THEN 'delivery' ELSE 'loading' END, e.time,"
    " e.event_id::text, e.event_id::text, p.epc, e.vehicle_id, e.stop_id, v.epc"
    " FROM parcel_event e JOIN parcel p USING (tracking_number)"
    " LEFT JOIN vehicle v ON v.vehicle_id = e.vehicle_id"
    " WHERE e.time >= %(since)s AND p.epc IS NOT NULL AND (e.status = 'Delivered'"
    " OR (e.sub_status IN ('InTransit_007', 'Exception_MISLOAD')"
    " AND e.vehicle_id IS NOT NULL))"
    ") AS u WHERE (u.time, u.kind, u.key) > (%(after_time)s, %(after_kind)s, %(after_key)s)"
    " ORDER BY u.time, u.kind, u.key LIMIT %(limit)s"
)  # fmt: skip


def encode_cursor(t: datetime, kind: str, key: str) -> str:
    """The position just after an event, as an opaque URL-safe token."""
    raw = orjson.dumps([(t - EPOCH) // MICROSECOND, kind, key])  # exact: no float seconds
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[datetime, str, str]:
    try:
        us, kind, key = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not (isinstance(us, int) and isinstance(kind, str) and isinstance(key, str)):
            raise ValueError("not a cursor")
        return EPOCH + us * MICROSECOND, kind, key
    except (ValueError, TypeError, OverflowError, OSError) as exc:
        raise ApiError(422, "invalid_request", "cursor: not one this API gave; pass"
                       " X-Next-Cursor of the previous page unchanged") from exc  # fmt: skip


@router.get("/events", summary="Gate passes, loadings and deliveries as an EPCIS 2.0 document",
            response_class=JsonResponse,
            responses={200: {"content": {"application/ld+json": {}},
                             "description": "an EPCISDocument (JSON-LD); when more events"
                                            " follow, the header X-Next-Cursor"}})  # fmt: skip
async def events(
    p: Annotated[AsyncConnectionPool, Depends(pool)],
    _key: Annotated[object, Depends(require("dispatcher"))],
    since: Annotated[datetime, Query(description="events at or after this time (RFC 3339)")],
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = 1000,
    cursor: Annotated[str | None, Query(description="X-Next-Cursor of the previous page",
                                        max_length=400)] = None,
) -> Response:
    if since.tzinfo is None:
        raise ApiError(422, "invalid_request", "since: give a time zone (Z or +hh:mm)")
    # without a cursor: everything at or after since (no event sorts before kind "")
    after = decode_cursor(cursor) if cursor else (since, "", "")
    params = {"since": max(since, after[0]), "after_time": after[0], "after_kind": after[1],
              "after_key": after[2], "limit": limit + 1}  # fmt: skip
    async with p.connection() as conn:
        cur = await conn.execute(_EVENTS_SQL, params)
        rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    out: list[dict[str, Any]] = []
    for kind, t, _, a, epc, b, c, d in rows:
        if kind == "pass":
            out.append(pass_event(t, a, epc, b, c))
        elif kind == "loading":
            out.append(loading_event(t, a, epc, b, d))
        else:
            out.append(delivery_event(t, a, epc, c))
    headers = {"X-Next-Cursor": encode_cursor(rows[-1][1], rows[-1][0], rows[-1][2])
               } if more and rows else {}  # fmt: skip
    body = JsonResponse(document(out, datetime.now(UTC))).body
    return Response(body, media_type="application/ld+json", headers=headers)
