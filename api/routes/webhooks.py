"""``POST /v1/webhooks``, ``GET /v1/webhooks``, ``DELETE /v1/webhooks/{id}`` and each
subscription's delivery log. Deliveries are made by ``milepost ingest``
(:mod:`ingest.webhooks`, where the body and signature are defined)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from api.deps import pool, require
from api.errors import ApiError
from api.keys import ApiKey
from ingest.webhooks import EVENT_TYPES, url_problem

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
MAX_NUMBERS = 1000
NOT_FOUND = ApiError(404, "not_found", "no such webhook")
EventType = Annotated[str, Field(pattern="^(" + "|".join(t.replace(".", r"\.")
                                                        for t in EVENT_TYPES) + ")$")]


PRINTABLE = r"^[^\x00-\x1f\x7f]+$"  # no control characters (a NUL cannot be stored)


class NewWebhook(BaseModel):
    url: Annotated[str, Field(max_length=2000, pattern=PRINTABLE,
                              examples=["https://example.com/milepost"])]
    events: Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES),
                                             examples=[["parcel.status", "exception"]])]
    secret: Annotated[str, Field(min_length=16, max_length=256, pattern=PRINTABLE,
                                 description="HMAC-SHA256 key for X-Milepost-Signature")]
    tracking_numbers: Annotated[
        list[Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{6,40}$")]] | None,
        Field(max_length=MAX_NUMBERS, description="required for a customer key; a"
              " dispatcher key may omit it for every parcel")] = None


class Webhook(BaseModel):
    webhook_id: int
    url: str
    events: list[str]
    tracking_numbers: list[str] | None
    created_at: datetime


class WebhookList(BaseModel):
    webhooks: list[Webhook]


class Delivery(BaseModel):
    event_id: str
    type: str
    created_at: datetime
    attempts: int
    delivered_at: datetime | None
    next_attempt_at: datetime | None = Field(description="null once delivered or given up")
    last_status: int | None
    last_error: str | None


class DeliveryLog(BaseModel):
    deliveries: list[Delivery]


@router.post("", status_code=201, response_model=Webhook, summary="Subscribe to parcel events")
async def create(
    request: Request,
    p: Annotated[AsyncConnectionPool, Depends(pool)],
    key: Annotated[ApiKey, Depends(require("customer", "dispatcher"))],
    body: NewWebhook,
) -> Webhook:
    if key.role == "customer" and not body.tracking_numbers:
        raise ApiError(422, "invalid_request", "a customer key must name its tracking_numbers")
    allow = request.state.settings.webhook_allow_private
    problem = await asyncio.get_running_loop().run_in_executor(
        None, lambda: url_problem(body.url, allow_private=allow))
    if problem is not None:
        raise ApiError(422, "invalid_url", problem)
    numbers = sorted(set(body.tracking_numbers)) if body.tracking_numbers else None
    async with p.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "INSERT INTO webhook (key_id, url, events, secret, tracking_numbers)"
            " VALUES (%s, %s, %s, %s, %s)"
            " RETURNING webhook_id, url, events, tracking_numbers, created_at",
            (key.key_id, body.url, sorted(set(body.events)), body.secret, numbers))  # fmt: skip
        row = await cur.fetchone()
    assert row is not None
    return Webhook(**row)


def _own(key: ApiKey) -> tuple[str, tuple[object, ...]]:
    """Admins see every subscription, others their own key's."""
    if key.role == "admin":
        return "deleted_at IS NULL", ()
    return "deleted_at IS NULL AND key_id = %s", (key.key_id,)


@router.get("", response_model=WebhookList, summary="This key's subscriptions")
async def list_webhooks(
    p: Annotated[AsyncConnectionPool, Depends(pool)],
    key: Annotated[ApiKey, Depends(require("customer", "dispatcher"))],
) -> WebhookList:
    where, params = _own(key)
    async with p.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT webhook_id, url, events, tracking_numbers, created_at"
                          f" FROM webhook WHERE {where} ORDER BY webhook_id", params)
        rows = await cur.fetchall()
    return WebhookList(webhooks=[Webhook(**r) for r in rows])


@router.delete("/{webhook_id}", status_code=204, summary="Unsubscribe",
               responses={404: {"description": "no such webhook (or not this key's)"}})
async def delete(
    p: Annotated[AsyncConnectionPool, Depends(pool)],
    key: Annotated[ApiKey, Depends(require("customer", "dispatcher"))],
    webhook_id: Annotated[int, Path(ge=1, le=2**62)],
) -> None:
    where, params = _own(key)
    async with p.connection() as conn:
        cur = await conn.execute(f"UPDATE webhook SET deleted_at = now() WHERE {where}"
                                 " AND webhook_id = %s", (*params, webhook_id))
        if cur.rowcount != 1:
            raise NOT_FOUND


@router.get("/{webhook_id}/deliveries", response_model=DeliveryLog,
            summary="The subscription's delivery log, newest first")
async def deliveries(
    p: Annotated[AsyncConnectionPool, Depends(pool)],
    key: Annotated[ApiKey, Depends(require("customer", "dispatcher"))],
    webhook_id: Annotated[int, Path(ge=1, le=2**62)],
    limit: int = 100,
) -> DeliveryLog:
    where, params = _own(key)
    async with p.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT 1 FROM webhook WHERE {where} AND webhook_id = %s",
                          (*params, webhook_id))
        if await cur.fetchone() is None:
            raise NOT_FOUND
        await cur.execute(
            "SELECT event_id::text, type, created_at, attempts, delivered_at,"
            " CASE WHEN delivered_at IS NULL AND next_attempt_at < 'infinity'"
            " THEN next_attempt_at END AS next_attempt_at, last_status, last_error"
            " FROM webhook_outbox WHERE webhook_id = %s ORDER BY outbox_id DESC LIMIT %s",
            (webhook_id, max(1, min(limit, 1000))))  # fmt: skip
        rows = await cur.fetchall()
    return DeliveryLog(deliveries=[Delivery(**r) for r in rows])
