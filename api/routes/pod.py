"""``POST /v1/pod``: a driver's proof of delivery over HTTP, the body of the MQTT
``fleet/{vehicle_id}/pod`` topic.

The key identifies the van: a ``device`` key whose name is the vehicle id
(``milepost keys create --role device --name VAN-0042``); a dispatcher or admin key names
it in the body's ``vehicle_id``. A device may prove only its own parcels: bound to its
van, or bound to none and planned for it (its route serves their stop); any other
tracking number is answered as an unknown one (404), so a device key cannot deliver,
or find, another van's parcels. A dispatcher may post for any parcel. The proof is
validated here, stored in ``pod_inbox`` and answered 202; ``milepost ingest`` applies it
to the parcel's lifecycle exactly as a proof received over MQTT, and marks it processed
in the same transaction.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from api.deps import pool, require
from api.errors import ApiError
from api.keys import ApiKey
from devices import fleet
from devices.errors import DecodeError

router = APIRouter(prefix="/v1/pod", tags=["devices"])

EXAMPLE = {"ts": "2026-11-24T14:32:10Z", "tracking_number": "MP100200300",
           "outcome": "delivered", "signed_by": "J. Doe"}  # fmt: skip


class Accepted(BaseModel):
    pod_id: int
    tracking_number: str
    vehicle_id: str


@router.post("", status_code=202, response_model=Accepted,
             summary="A proof of delivery (applied by milepost ingest)",
             responses={404: {"description": "no such parcel (for a device key: none of its"
                                             " van's), or the key's van is unknown"},
                        422: {"description": "malformed proof"}})  # fmt: skip
async def post_pod(
    p: Annotated[AsyncConnectionPool, Depends(pool)],
    key: Annotated[ApiKey, Depends(require("device", "dispatcher"))],
    doc: Annotated[dict[str, Any], Body(openapi_examples={"delivered": {"value": EXAMPLE}})],
) -> Accepted:
    vehicle = key.name if key.role == "device" else doc.pop("vehicle_id", None)
    if not isinstance(vehicle, str) or not vehicle:
        raise ApiError(422, "invalid_request", "a dispatcher key must name the van in"
                       " 'vehicle_id'; a device key is named after its van")  # fmt: skip
    payload = orjson.dumps({k: v for k, v in doc.items() if k != "vehicle_id"})
    try:
        pod = fleet.decode_pod(payload)
    except DecodeError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from exc
    async with p.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT 1 FROM vehicle WHERE vehicle_id = %(van)s),"
            " (SELECT 1 FROM parcel p LEFT JOIN parcel_latest l USING (tracking_number)"
            " WHERE p.tracking_number = %(tn)s AND (%(any)s OR l.vehicle_id = %(van)s"
            " OR (l.vehicle_id IS NULL AND p.stop_id IN"
            " (SELECT stop_id FROM route_stop WHERE vehicle_id = %(van)s))))",
            {"van": vehicle, "tn": pod.tracking_number, "any": key.role != "device"})  # fmt: skip
        known_van, known_parcel = await cur.fetchone() or (None, None)
        if known_van is None:
            raise ApiError(404, "unknown_vehicle", f"no vehicle {vehicle!r}: register it with"
                           f" `milepost devices add {vehicle}`")  # fmt: skip
        if known_parcel is None:
            raise ApiError(404, "not_found", "no such parcel")
        cur = await conn.execute(
            "INSERT INTO pod_inbox (vehicle_id, payload) VALUES (%s, %s) RETURNING pod_id",
            (vehicle, payload))  # fmt: skip
        row = await cur.fetchone()
    assert row is not None
    return Accepted(pod_id=row[0], tracking_number=pod.tracking_number, vehicle_id=vehicle)
