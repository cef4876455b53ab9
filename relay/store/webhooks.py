"""Webhooks: the endpoints tenants registered and the persistent outbox of POSTs to them.

`enqueue`/`enqueue_many` run in the caller's transaction (outcome, tracking flush), so an
event is queued exactly when its cause commits; the dispatcher (relay.webhooks) claims due
rows, POSTs them and records the result with backoff. Delivery of mail never waits on it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store.db import utcnow
from relay.store.tables import webhook_deliveries, webhooks

EVENT_TYPES = frozenset(
    {
        "delivered",
        "bounced",
        "deferred",
        "failed",
        "opened",
        "clicked",
        "unsubscribed",
        "complained",
    }
)


async def create(
    conn: AsyncConnection, tenant_id: int, url: str, events: list[str], secret: str | None = None
) -> tuple[int, str]:
    """Register an endpoint; returns (id, signing secret)."""
    secret = secret or "whsec_" + secrets.token_urlsafe(32)
    result = await conn.execute(
        webhooks.insert().values(
            tenant_id=tenant_id,
            url=url,
            secret=secret,
            events=sorted(set(events)),
            active=True,
            created_at=utcnow(),
        )
    )
    return int(result.inserted_primary_key[0]), secret  # type: ignore[index]


async def list_page(
    conn: AsyncConnection, tenant_id: int | None, after_id: int, limit: int
) -> list[Any]:
    query = select(webhooks).where(webhooks.c.id > after_id).order_by(webhooks.c.id).limit(limit)
    if tenant_id is not None:
        query = query.where(webhooks.c.tenant_id == tenant_id)
    return list(await conn.execute(query))


async def remove(conn: AsyncConnection, tenant_id: int | None, webhook_id: int) -> bool:
    stmt = delete(webhooks).where(webhooks.c.id == webhook_id)
    if tenant_id is not None:
        stmt = stmt.where(webhooks.c.tenant_id == tenant_id)
    return bool((await conn.execute(stmt)).rowcount)


async def enqueue(
    conn: AsyncConnection,
    tenant_id: int,
    event_type: str,
    payload: dict[str, Any],
    at: datetime | None = None,
) -> int:
    """Queue one event for each of the tenant's active webhooks that want it."""
    return await enqueue_many(conn, [(tenant_id, event_type, payload)], at)


async def enqueue_many(
    conn: AsyncConnection,
    events: Iterable[tuple[int, str, dict[str, Any]]],
    at: datetime | None = None,
) -> int:
    """Queue events (tenant, type, payload) with one lookup of the tenants' webhooks."""
    events = list(events)
    tenant_ids = sorted({t for t, _, _ in events})
    if not tenant_ids:
        return 0
    hooks: dict[int, list[Any]] = {}
    for hook in await conn.execute(
        select(webhooks.c.id, webhooks.c.tenant_id, webhooks.c.events).where(
            webhooks.c.tenant_id.in_(tenant_ids), webhooks.c.active.is_(True)
        )
    ):
        hooks.setdefault(hook.tenant_id, []).append(hook)
    if not hooks:
        return 0
    now = at or utcnow()
    rows = []
    for tenant_id, event_type, payload in events:
        for hook in hooks.get(tenant_id, ()):
            if hook.events and event_type not in hook.events:
                continue
            event = {
                "type": event_type,
                "tenant": tenant_id,
                "created_at": now.isoformat() + "Z",
                "data": payload,
            }
            rows.append(
                {
                    "webhook_id": hook.id,
                    "event": event,
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
            )
    if rows:
        await conn.execute(webhook_deliveries.insert(), rows)
    return len(rows)


async def claim_due(
    conn: AsyncConnection, now: datetime, lease: timedelta, limit: int
) -> list[Any]:
    """Due pending posts, each claimed by pushing its time past the lease (another node's
    claim wins the conditional update, so a post is not sent twice at once)."""
    w, d = webhooks.c, webhook_deliveries.c
    due = list(
        await conn.execute(
            select(d.id, d.event, d.attempts, d.next_attempt_at, w.url, w.secret)
            .join(webhooks, w.id == d.webhook_id)
            .where(d.state == "pending", d.next_attempt_at <= now)
            .order_by(d.next_attempt_at)
            .limit(limit)
        )
    )
    claimed = []
    for row in due:
        result = await conn.execute(
            update(webhook_deliveries)
            .where(d.id == row.id, d.next_attempt_at == row.next_attempt_at, d.state == "pending")
            .values(next_attempt_at=now + lease)
        )
        if result.rowcount:
            claimed.append(row)
    return claimed


async def record(
    conn: AsyncConnection,
    post_id: int,
    attempts: int,
    error: str | None,
    next_attempt_at: datetime | None,
) -> None:
    """Sent (error None), retry at `next_attempt_at`, or failed for good (both None…)."""
    if error is None:
        values: dict[str, Any] = {"state": "sent", "attempts": attempts, "last_error": None}
    elif next_attempt_at is not None:
        values = {
            "attempts": attempts,
            "last_error": error[:1000],
            "next_attempt_at": next_attempt_at,
        }
    else:
        values = {"state": "failed", "attempts": attempts, "last_error": error[:1000]}
    await conn.execute(
        update(webhook_deliveries).where(webhook_deliveries.c.id == post_id).values(**values)
    )
