"""The suppression list: addresses relay must not mail, globally or for one tenant.

Rows are keyed by scope (0 = the whole installation, else the tenant id) and the
normalized address key. Intake and the scheduler ask `suppressed_among`; bounces,
complaints, unsubscribes and operators add. Every change bumps the 'suppressions'
change counter so processes holding a cached copy (`SuppressionCache`) know to refresh.
`list_page` pages with filters by id cursor; `prune` deletes expired rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

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


@dataclass(frozen=True, slots=True)
class Suppression:
    id: int
    tenant_id: int | None  # None = global
    email: str
    reason: str
    source: str
    created_at: datetime
    expires_at: datetime | None


def expiry(ttl_s: float, now: datetime | None = None) -> datetime | None:
    """When a suppression made now with this lifetime ends; None = never (ttl 0)."""
    if ttl_s <= 0:
        return None
    return (now or utcnow()) + timedelta(seconds=ttl_s)


async def list_page(
    conn: AsyncConnection,
    *,
    scope: int | None = None,
    reason: str | None = None,
    email_contains: str | None = None,
    after_id: int = 0,
    limit: int = 100,
    include_expired: bool = False,
    now: datetime | None = None,
) -> list[Suppression]:
    """One page of suppressions ordered by id; pass the last id as `after_id` for the next.

    `scope`: None = every scope, 0 = global only, else that tenant's rows only.
    """
    query = select(suppressions).where(suppressions.c.id > after_id)
    if scope is not None:
        query = query.where(suppressions.c.scope == scope)
    if reason:
        query = query.where(suppressions.c.reason == reason)
    if email_contains:
        pattern = "%" + email_contains.lower().replace("%", r"\%").replace("_", r"\_") + "%"
        query = query.where(suppressions.c.email.like(pattern, escape="\\"))
    if not include_expired:
        query = query.where(
            or_(suppressions.c.expires_at.is_(None), suppressions.c.expires_at > (now or utcnow()))
        )
    rows = await conn.execute(query.order_by(suppressions.c.id).limit(limit))
    return [
        Suppression(r.id, r.tenant_id, r.email, r.reason, r.source, r.created_at, r.expires_at)
        for r in rows
    ]


async def prune(conn: AsyncConnection, now: datetime | None = None) -> int:
    """Delete expired suppressions; returns how many went."""
    result = await conn.execute(
        delete(suppressions).where(
            suppressions.c.expires_at.is_not(None), suppressions.c.expires_at <= (now or utcnow())
        )
    )
    if result.rowcount:
        await bump_counter(conn, COUNTER)
    return int(result.rowcount or 0)


class SuppressionCache:
    """An in-memory copy of the live suppressions, reloaded when the change counter moves.

    Intake and the scheduler ask `reason_for` without a query; `refresh` (called at start and
    every `bounce.suppression_refresh` seconds) costs one tiny read unless something changed.
    """

    def __init__(self) -> None:
        self.version = -1
        self._rows: dict[tuple[int, str], tuple[str, datetime | None]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    async def refresh(self, conn: AsyncConnection) -> bool:
        """Reload if the counter moved since the last load; True if it reloaded."""
        version = await read_counter(conn, COUNTER)
        if version == self.version:
            return False
        now = utcnow()
        rows = await conn.execute(
            select(
                suppressions.c.scope,
                suppressions.c.email,
                suppressions.c.reason,
                suppressions.c.expires_at,
            ).where(or_(suppressions.c.expires_at.is_(None), suppressions.c.expires_at > now))
        )
        self._rows = {(r.scope, r.email): (r.reason, r.expires_at) for r in rows}
        self.version = version
        return True

    def reason_for(self, tenant_id: int, key: str, now: datetime | None = None) -> str | None:
        """Why this address key is suppressed for the tenant (tenant row first), or None."""
        now = now or utcnow()
        for scope in (tenant_id, GLOBAL):
            hit = self._rows.get((scope, key))
            if hit is not None and (hit[1] is None or hit[1] > now):
                return hit[0]
        return None
