"""Read queries behind the REST API: suppressions, messages with their deliveries and
events, recipients. Every query takes the tenant scope (None = every tenant, for admin
keys) and pages by id through an index; nothing scans a whole table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store.tables import (
    accounts,
    deliveries,
    messages,
    recipient_events,
    recipients,
    suppressions,
    usage_counters,
)


async def suppressions_page(
    conn: AsyncConnection, scope: int | None, email: str | None, after_id: int, limit: int
) -> list[Any]:
    query = (
        select(suppressions)
        .where(suppressions.c.id > after_id)
        .order_by(suppressions.c.id)
        .limit(limit)
    )
    if scope is not None:
        query = query.where(suppressions.c.scope == scope)
    if email:
        query = query.where(suppressions.c.email == email)
    return list(await conn.execute(query))


async def all_suppressions(
    conn: AsyncConnection, scope: int | None, chunk: int = 5000
) -> AsyncIterator[Any]:
    """Every suppression of the scope, in id order, read a chunk at a time."""
    after = 0
    while True:
        rows = await suppressions_page(conn, scope, None, after, chunk)
        for row in rows:
            yield row
        if len(rows) < chunk:
            return
        after = rows[-1].id


async def messages_page(
    conn: AsyncConnection,
    tenant_id: int | None,
    *,
    campaign_id: int | None = None,
    email: str | None = None,
    status: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    before_id: int = 0,
    limit: int = 100,
) -> list[Any]:
    """Messages newest first; `before_id` > 0 continues after a page."""
    m = messages.c
    query = (
        select(
            m.id,
            m.tenant_id,
            m.campaign_id,
            m.message_id_header,
            m.mail_from,
            m.subject,
            m.size,
            m.received_at,
        )
        .order_by(m.id.desc())
        .limit(limit)
    )
    if tenant_id is not None:
        query = query.where(m.tenant_id == tenant_id)
    if before_id:
        query = query.where(m.id < before_id)
    if campaign_id is not None:
        query = query.where(m.campaign_id == campaign_id)
    if start is not None:
        query = query.where(m.received_at >= start)
    if end is not None:
        query = query.where(m.received_at < end)
    if email or status:
        d = deliveries.c
        cond = [d.message_id == m.id]
        if email:
            cond.append(d.recipient_key == email)
        if status:
            cond.append(d.state == status)
        query = query.where(exists().where(*cond))
    return list(await conn.execute(query))


async def message(conn: AsyncConnection, tenant_id: int | None, message_id: int) -> Any | None:
    query = select(
        messages.c.id,
        messages.c.tenant_id,
        messages.c.campaign_id,
        messages.c.message_id_header,
        messages.c.mail_from,
        messages.c.from_header,
        messages.c.subject,
        messages.c.size,
        messages.c.received_at,
    ).where(messages.c.id == message_id)
    if tenant_id is not None:
        query = query.where(messages.c.tenant_id == tenant_id)
    return (await conn.execute(query)).first()


async def deliveries_of(conn: AsyncConnection, message_id: int) -> list[Any]:
    return list(
        await conn.execute(
            select(deliveries)
            .where(deliveries.c.message_id == message_id)
            .order_by(deliveries.c.id)
        )
    )


async def events_of_message(conn: AsyncConnection, message_id: int, limit: int = 1000) -> list[Any]:
    e = recipient_events.c
    return list(
        await conn.execute(
            select(recipient_events)
            .where(e.message_id == message_id)
            .order_by(e.occurred_at, e.id)
            .limit(limit)
        )
    )


async def recipient(conn: AsyncConnection, tenant_id: int, key: str) -> Any | None:
    return (
        await conn.execute(
            select(recipients).where(recipients.c.tenant_id == tenant_id, recipients.c.email == key)
        )
    ).first()


async def recipient_deliveries(
    conn: AsyncConnection, tenant_id: int, key: str, limit: int = 100
) -> list[Any]:
    d = deliveries.c
    return list(
        await conn.execute(
            select(
                d.id,
                d.message_id,
                d.campaign_id,
                d.state,
                d.attempts,
                d.last_reply,
                d.created_at,
                d.final_at,
            )
            .where(d.tenant_id == tenant_id, d.recipient_key == key)
            .order_by(d.id.desc())
            .limit(limit)
        )
    )


async def recipient_states(conn: AsyncConnection, tenant_id: int, key: str) -> dict[str, int]:
    d = deliveries.c
    rows = await conn.execute(
        select(d.state, func.count())
        .where(d.tenant_id == tenant_id, d.recipient_key == key)
        .group_by(d.state)
    )
    return {state: int(n) for state, n in rows}


async def recipient_events_page(
    conn: AsyncConnection, tenant_id: int, key: str, limit: int = 100
) -> list[Any]:
    e = recipient_events.c
    return list(
        await conn.execute(
            select(recipient_events)
            .where(e.tenant_id == tenant_id, e.recipient == key)
            .order_by(e.occurred_at.desc(), e.id.desc())
            .limit(limit)
        )
    )


async def suppression_of(conn: AsyncConnection, tenant_id: int, key: str) -> Any | None:
    return (
        await conn.execute(
            select(suppressions)
            .where(suppressions.c.scope.in_((0, tenant_id)), suppressions.c.email == key)
            .order_by(suppressions.c.scope)
        )
    ).first()


async def account_rows(conn: AsyncConnection) -> dict[str, Any]:
    """name → accounts row (the pool's persistent state)."""
    return {r.name: r for r in await conn.execute(select(accounts).order_by(accounts.c.name))}


async def account_usage(conn: AsyncConnection, names: list[str], day: datetime) -> dict[str, Any]:
    """name → today's usage_counters row (count, bounces) of each account."""
    subjects = {f"account:{n}": n for n in names}
    rows = await conn.execute(
        select(usage_counters).where(
            usage_counters.c.subject.in_(list(subjects)),
            usage_counters.c.window == "day",
            usage_counters.c.window_start == day,
        )
    )
    return {subjects[r.subject]: r for r in rows}


async def set_account_paused(
    conn: AsyncConnection, name: str, paused: bool, reason: str | None, now: datetime
) -> None:
    """Pause or resume a pool account (creating its row when the pool has not yet)."""
    values = {
        "paused": paused,
        "paused_reason": reason if paused else None,
        "paused_until": None,
        "updated_at": now,
    }
    result = await conn.execute(update(accounts).where(accounts.c.name == name).values(**values))
    if result.rowcount == 0:
        await conn.execute(accounts.insert().values(name=name, created_at=now, **values))
