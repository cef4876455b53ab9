"""The suppression list: addresses relay must not mail, globally or for one tenant.

Rows are keyed by scope (0 = the whole installation, else the tenant id) and the
normalized address key. Intake and the scheduler ask `suppressed_among`; bounces,
complaints, unsubscribes and operators add. Every change bumps the 'suppressions'
change counter so processes holding a cached copy know to refresh.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store.db import utcnow
from relay.store.tables import change_counters, suppressions

GLOBAL = 0
COUNTER = "suppressions"


def scope_of(tenant_id: int | None) -> int:
    return GLOBAL if tenant_id is None else tenant_id


async def suppressed_among(
    conn: AsyncConnection, tenant_id: int, keys: Iterable[str], now: datetime | None = None
) -> dict[str, str]:
    """Of these address keys, those suppressed for the tenant (or globally) → reason."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    now = now or utcnow()
    rows = await conn.execute(
        select(suppressions.c.email, suppressions.c.reason).where(
            suppressions.c.scope.in_((GLOBAL, tenant_id)),
            suppressions.c.email.in_(wanted),
            or_(suppressions.c.expires_at.is_(None), suppressions.c.expires_at > now),
        )
    )
    return {row.email: row.reason for row in rows}


async def add(
    conn: AsyncConnection,
    tenant_id: int | None,
    key: str,
    reason: str,
    source: str = "",
    expires_at: datetime | None = None,
) -> bool:
    """Suppress an address key; an existing row for the scope is refreshed. True if new."""
    scope = scope_of(tenant_id)
    values = {
        "reason": reason,
        "source": source[:255],
        "created_at": utcnow(),
        "expires_at": expires_at,
    }
    existing = await conn.execute(
        update(suppressions)
        .where(suppressions.c.scope == scope, suppressions.c.email == key)
        .values(**values)
    )
    created = False
    if existing.rowcount == 0:
        try:
            async with conn.begin_nested():
                await conn.execute(
                    suppressions.insert().values(
                        scope=scope, tenant_id=tenant_id, email=key, **values
                    )
                )
            created = True
        except IntegrityError:  # a concurrent writer inserted it first: theirs stands
            pass
    await bump_counter(conn, COUNTER)
    return created


async def remove(conn: AsyncConnection, tenant_id: int | None, key: str) -> bool:
    result = await conn.execute(
        delete(suppressions).where(
            and_(suppressions.c.scope == scope_of(tenant_id), suppressions.c.email == key)
        )
    )
    if result.rowcount:
        await bump_counter(conn, COUNTER)
    return bool(result.rowcount)


async def bump_counter(conn: AsyncConnection, name: str) -> None:
    result = await conn.execute(
        update(change_counters)
        .where(change_counters.c.name == name)
        .values(value=change_counters.c.value + 1)
    )
    if result.rowcount == 0:
        try:
            async with conn.begin_nested():
                await conn.execute(change_counters.insert().values(name=name, value=1))
        except IntegrityError:
            await conn.execute(
                update(change_counters)
                .where(change_counters.c.name == name)
                .values(value=change_counters.c.value + 1)
            )


async def read_counter(conn: AsyncConnection, name: str) -> int:
    value = (
        await conn.execute(select(change_counters.c.value).where(change_counters.c.name == name))
    ).scalar()
    return int(value or 0)
