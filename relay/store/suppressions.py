"""The suppression list: addresses relay must not mail, globally or for one tenant.

Rows are keyed by scope (0 = the whole installation, else the tenant id) and the
normalized address key. Intake and the scheduler ask `suppressed_among` (a query) or a
`SuppressionCache` (memory); bounces, complaints, unsubscribes and operators add. Every change
bumps the 'suppressions' change counter (removals also 'suppressions.removed') so processes
holding a cached copy know to refresh.
`list_page` pages with filters by id cursor; `prune` deletes expired rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from relay import log
from relay.addresses import key_of
from relay.store.db import Database, describe_error, utcnow
from relay.store.tables import change_counters, recipients, suppressions

GLOBAL = 0
COUNTER = "suppressions"  # moves on every change
REMOVED_COUNTER = "suppressions.removed"  # moves when rows go: caches reload in full
logger = log.get(__name__)


def scope_of(tenant_id: int | None) -> int:
    return GLOBAL if tenant_id is None else tenant_id


async def suppressed_among(
    conn: AsyncConnection, tenant_id: int, keys: Iterable[str], now: datetime | None = None
) -> dict[str, str]:
    """Of these address keys, those suppressed for the tenant (or globally) → reason."""
    return await conn.run_sync(suppressed_among_sync, tenant_id, keys, now)


def suppressed_among_sync(
    conn: Connection, tenant_id: int, keys: Iterable[str], now: datetime | None = None
) -> dict[str, str]:
    """`suppressed_among` on a synchronous connection (a `Database.run_write` transaction)."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    now = now or utcnow()
    rows = conn.execute(
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
    *,
    replace: bool = False,
) -> bool:
    """Suppress an address key; True if new.

    An existing row for the scope is taken over only when the new one lasts at least as
    long (a 90-day hard bounce never shortens a complaint or unsubscribe kept forever);
    `replace` (an operator's explicit add) takes it over whatever it was.
    """
    scope = scope_of(tenant_id)
    values = {
        "reason": reason,
        "source": source[:255],
        "created_at": utcnow(),
        "expires_at": expires_at,
    }
    where = [suppressions.c.scope == scope, suppressions.c.email == key]
    if not replace and expires_at is not None:
        where.append(
            and_(suppressions.c.expires_at.is_not(None), suppressions.c.expires_at <= expires_at)
        )
    existing = await conn.execute(update(suppressions).where(*where).values(**values))
    created = False
    if existing.rowcount:
        await _set_status(conn, scope, key, RECIPIENT_STATUS.get(reason, "suppressed"))
    else:
        try:
            async with conn.begin_nested():
                await conn.execute(
                    suppressions.insert().values(
                        scope=scope, tenant_id=tenant_id, email=key, **values
                    )
                )
            created = True
            await _set_status(conn, scope, key, RECIPIENT_STATUS.get(reason, "suppressed"))
        except IntegrityError:  # there already (a longer one), or a concurrent writer's stands
            pass
    await bump_counter(conn, COUNTER)
    return created


# Suppression reason → the tenant's `recipients.status` for the address ("active" when lifted).
RECIPIENT_STATUS = {
    "hard_bounce": "bounced",
    "soft_bounce": "bounced",
    "complaint": "complained",
    "unsubscribe": "unsubscribed",
    "manual": "suppressed",
}


async def _set_status(conn: AsyncConnection, scope: int, key: str, status: str) -> None:
    """Keep the tenant's recipient row in step (global rows leave every tenant's alone: the
    address has no index of its own there, and a lookup shows the global suppression)."""
    if scope != GLOBAL:
        await conn.execute(
            update(recipients)
            .where(recipients.c.tenant_id == scope, recipients.c.email == key)
            .values(status=status)
        )


async def remove(conn: AsyncConnection, tenant_id: int | None, key: str) -> bool:
    result = await conn.execute(
        delete(suppressions).where(
            and_(suppressions.c.scope == scope_of(tenant_id), suppressions.c.email == key)
        )
    )
    if result.rowcount:
        await _set_status(conn, scope_of(tenant_id), key, "active")
        await bump_counter(conn, COUNTER)
        await bump_counter(conn, REMOVED_COUNTER)
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
    return await conn.run_sync(read_counter_sync, name)


def read_counter_sync(conn: Connection, name: str) -> int:
    query = select(change_counters.c.value).where(change_counters.c.name == name)
    return int(conn.execute(query).scalar() or 0)


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
    expired = (
        suppressions.c.expires_at.is_not(None),
        suppressions.c.expires_at <= (now or utcnow()),
    )
    lifted = (
        await conn.execute(select(suppressions.c.scope, suppressions.c.email).where(*expired))
    ).all()
    result = await conn.execute(delete(suppressions).where(*expired))
    for scope, key in lifted:
        await _set_status(conn, scope, key, "active")
    if result.rowcount:
        await bump_counter(conn, COUNTER)
        await bump_counter(conn, REMOVED_COUNTER)
    return int(result.rowcount or 0)


class SuppressionCache:
    """A process's in-memory copy of the live suppression list: `contains` without a query.

    Use: `cache = await SuppressionCache.start(db, refresh_s=config.bounce.suppression_refresh)`
    at startup (one full load), run `cache.run(stopping)` in the role's TaskGroup, and ask
    `contains(tenant_id, address)` / `reason_for` / `among` on the hot path (dict lookups).
    After a write of its own, a process calls `note_added` / `note_removed` so it sees the
    change at once; other processes see it within `refresh_s`.

    Sync across processes: every refresh reads the two change counters (one tiny query). If
    nothing moved, that is all. If only additions happened, it fetches the rows created or
    refreshed since its previous read (minus `OVERLAP_S`, for transactions that commit late
    and clocks that differ between nodes). A removal or prune moves `REMOVED_COUNTER` and makes
    the next refresh reload the whole list. Expired rows are ignored at lookup time.
    """

    OVERLAP_S = 120.0

    def __init__(self, db: Database | None = None, *, refresh_s: float = 10.0) -> None:
        self.db = db
        self.refresh_s = refresh_s
        self.version = -1
        self.reloads = 0  # full loads done, for tests and metrics
        self._removed = -1
        self._high_water: datetime | None = None
        self._rows: dict[tuple[int, str], tuple[str, datetime | None]] = {}

    @classmethod
    async def start(cls, db: Database, *, refresh_s: float = 10.0) -> SuppressionCache:
        """A cache loaded from the database, ready for lookups."""
        cache = cls(db, refresh_s=refresh_s)
        await cache.refresh()
        return cache

    def __len__(self) -> int:
        return len(self._rows)

    async def refresh(self, conn: AsyncConnection | None = None) -> bool:
        """Catch up with the database if its change counter moved; True if anything was read."""
        if conn is None:
            if self.db is None:
                raise RuntimeError("SuppressionCache.refresh needs a connection or a Database")
            async with self.db.read() as own:
                return await self.refresh(own)
        counters = dict(
            (
                await conn.execute(
                    select(change_counters.c.name, change_counters.c.value).where(
                        change_counters.c.name.in_((COUNTER, REMOVED_COUNTER))
                    )
                )
            ).all()
        )
        version, removed = int(counters.get(COUNTER, 0)), int(counters.get(REMOVED_COUNTER, 0))
        started = utcnow()
        if version == self.version and removed == self._removed:
            return False
        query = select(
            suppressions.c.scope,
            suppressions.c.email,
            suppressions.c.reason,
            suppressions.c.created_at,
            suppressions.c.expires_at,
        )
        full = self.version < 0 or removed != self._removed or self._high_water is None
        if full:
            fresh: dict[tuple[int, str], tuple[str, datetime | None]] = {}
            query = query.where(
                or_(suppressions.c.expires_at.is_(None), suppressions.c.expires_at > utcnow())
            )
        else:
            fresh = self._rows
            since = self._high_water - timedelta(seconds=self.OVERLAP_S)  # type: ignore[operator]
            query = query.where(suppressions.c.created_at >= since)  # no index: one scan
        for r in await conn.execute(query):
            fresh[(r.scope, r.email)] = (r.reason, r.expires_at)
        # Everything committed before this read is in it; a later commit carries a created_at
        # of about now or later, give or take OVERLAP_S (slow transactions, other nodes' clocks).
        self._rows, self._high_water = fresh, started
        self.version, self._removed = version, removed
        self.reloads += int(full)
        return True

    async def run(self, stopping: asyncio.Event) -> None:
        """Refresh every `refresh_s` until `stopping` is set; on failure keep the old copy."""
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), timeout=self.refresh_s)
            except TimeoutError:
                pass
            if stopping.is_set():
                return
            try:
                await self.refresh()
            except Exception as e:  # noqa: BLE001 - database trouble: serve the last copy
                logger.warning("suppressions.refresh_failed", error=describe_error(e))

    def reason_for(self, tenant_id: int, key: str, now: datetime | None = None) -> str | None:
        """Why this address key is suppressed for the tenant (tenant row first), or None."""
        now = now or utcnow()
        for scope in (tenant_id, GLOBAL):
            hit = self._rows.get((scope, key))
            if hit is not None and (hit[1] is None or hit[1] > now):
                return hit[0]
        return None

    def contains(self, tenant_id: int, address: str, now: datetime | None = None) -> bool:
        """Is this address (any spelling; normalized here) suppressed for the tenant?"""
        return self.reason_for(tenant_id, key_of(address), now) is not None

    def among(
        self, tenant_id: int, keys: Iterable[str], now: datetime | None = None
    ) -> dict[str, str]:
        """Of these address keys, those suppressed for the tenant → reason (as
        `suppressed_among`, without a query)."""
        now = now or utcnow()
        found = {}
        for key in keys:
            reason = self.reason_for(tenant_id, key, now)
            if reason is not None:
                found[key] = reason
        return found

    def note_added(
        self, tenant_id: int | None, key: str, reason: str, expires_at: datetime | None = None
    ) -> None:
        """Record a suppression this process has just committed (seen before the next refresh)."""
        self._rows[(scope_of(tenant_id), key)] = (reason, expires_at)

    def note_removed(self, tenant_id: int | None, key: str) -> None:
        self._rows.pop((scope_of(tenant_id), key), None)
