"""Smarthost accounts and usage counters, shared by every delivery node through the database.

Input: account names from `[[delivery.accounts]]`, pause/resume requests, outcomes. Output:
account rows (paused, reason, until, consecutive failures, warm-up start) and per-day usage.
Side effects: rows in `accounts` and `usage_counters` (upserts, safe between nodes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.errors import NotFound
from relay.store.db import Database
from relay.store.tables import accounts, usage_counters


@dataclass(frozen=True, slots=True)
class AccountRow:
    name: str
    paused: bool
    paused_reason: str | None
    paused_until: datetime | None
    consecutive_failures: int
    warmup_started_at: datetime | None
    sent_today: int
    sent_minute: float = 0.0  # the sliding last minute, every node
    window_sent: int = 0  # sends and hard bounces in the bounce-rate window (since resume)
    window_bounced: int = 0


def day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


async def ensure(db: Database, names: Iterable[str], now: datetime) -> None:
    """Create the rows of configured accounts that have none yet (warm-up starts now)."""
    async with db.write() as conn:
        known = set((await conn.execute(select(accounts.c.name))).scalars())
        for name in names:
            if name not in known:
                await conn.execute(
                    _insert(conn, accounts)
                    .values(
                        name=name,
                        paused=False,
                        consecutive_failures=0,
                        warmup_started_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                    .prefix_with("IGNORE", dialect="mysql")
                    .prefix_with("OR IGNORE", dialect="sqlite")
                )


async def read_all(db: Database, now: datetime, window_s: float = 3600.0) -> list[AccountRow]:
    """Every account with today's usage, the sliding minute and the bounce-rate window."""
    minute = now.replace(second=0, microsecond=0)
    since = minute - timedelta(seconds=max(window_s, 120.0))
    async with db.read() as conn:
        recent = list(
            await conn.execute(
                select(
                    usage_counters.c.subject,
                    usage_counters.c.window_start,
                    usage_counters.c.count,
                    usage_counters.c.bounces,
                ).where(
                    usage_counters.c.window == "minute",
                    usage_counters.c.window_start >= since,
                    usage_counters.c.subject.like("account:%"),
                )
            )
        )
        used: dict[str, int] = {
            r.subject.removeprefix("account:"): r[1]  # r.count is tuple.count to mypy
            for r in await conn.execute(
                select(usage_counters.c.subject, usage_counters.c.count).where(
                    usage_counters.c.window == "day",
                    usage_counters.c.window_start == day_start(now),
                    usage_counters.c.subject.like("account:%"),
                )
            )
        }
        rows = await conn.execute(select(accounts).order_by(accounts.c.name))
    left_of_previous = 1.0 - (now - minute).total_seconds() / 60.0
    found = []
    for r in rows:
        # Bounces count from the later of the window start and the last pause/resume.
        start = max(now - timedelta(seconds=window_s), r.updated_at)
        mine = [c for c in recent if c.subject == f"account:{r.name}"]
        found.append(
            AccountRow(
                r.name,
                bool(r.paused),
                r.paused_reason,
                r.paused_until,
                r.consecutive_failures,
                r.warmup_started_at,
                used.get(r.name, 0),
                sum(c[2] for c in mine if c.window_start == minute)
                + left_of_previous
                * sum(c[2] for c in mine if c.window_start == minute - timedelta(minutes=1)),
                sum(c[2] for c in mine if c.window_start >= start.replace(second=0, microsecond=0)),
                sum(c[3] for c in mine if c.window_start >= start.replace(second=0, microsecond=0)),
            )
        )
    return found


async def record_use(
    conn: AsyncConnection, name: str, now: datetime, sent: int = 1, bounced: int = 0
) -> None:
    """Count messages sent through an account (and how many hard-bounced): per day (limits,
    warm-up) and per minute (per-minute rate, hard-bounce rate)."""
    await bump_usage(conn, f"account:{name}", "day", day_start(now), sent, bounced)
    minute = now.replace(second=0, microsecond=0)
    await bump_usage(conn, f"account:{name}", "minute", minute, sent, bounced)


async def set_paused(
    db: Database,
    name: str,
    paused: bool,
    now: datetime,
    reason: str | None = None,
    until: datetime | None = None,
) -> None:
    """Pause (optionally until a time) or resume an account; NotFound if there is none."""
    values: dict[str, object] = {
        "paused": paused,
        "paused_reason": reason if paused else None,
        "paused_until": until if paused else None,
        "updated_at": now,
    }
    if not paused:
        values["consecutive_failures"] = 0
    async with db.write() as conn:
        result = await conn.execute(
            update(accounts).where(accounts.c.name == name).values(**values)
        )
    if result.rowcount != 1:
        raise NotFound(f"no account named {name!r} (see `relay accounts list`)")


async def expire_pauses(db: Database, now: datetime) -> int:
    """Resume accounts whose cool-down is over."""
    async with db.write() as conn:
        result = await conn.execute(
            update(accounts)
            .where(accounts.c.paused.is_(True), accounts.c.paused_until <= now)
            .values(
                paused=False,
                paused_reason=None,
                paused_until=None,
                consecutive_failures=0,
                updated_at=now,
            )
        )
        return int(result.rowcount)


async def bump_usage(
    conn: AsyncConnection,
    subject: str,
    window: str,
    start: datetime,
    count: int = 1,
    bounces: int = 0,
) -> None:
    """Add to a usage counter, creating it if needed (an upsert on both databases)."""
    stmt = _insert(conn, usage_counters).values(
        subject=subject, window=window, window_start=start, count=count, bounces=bounces
    )
    if conn.dialect.name == "sqlite":
        stmt = stmt.on_conflict_do_update(
            index_elements=["subject", "window", "window_start"],
            set_={
                "count": usage_counters.c.count + count,
                "bounces": usage_counters.c.bounces + bounces,
            },
        )
    else:
        stmt = stmt.on_duplicate_key_update(
            count=usage_counters.c.count + count, bounces=usage_counters.c.bounces + bounces
        )
    await conn.execute(stmt)


def _insert(conn: AsyncConnection, table: Any) -> Any:
    return (sqlite.insert if conn.dialect.name == "sqlite" else mysql.insert)(table)
