"""Sliding-window sending counters shared by every delivery node (tenants, pool accounts).

Input: a subject ('tenant:3', 'account:primary'), how many sends it wants, its limits per
minute, hour and day, and the time. Output: how many may go now and how long the rest wait.
Side effects: per-minute rows in `usage_counters` (window 'minute'), reserved with an upsert
that locks the row (MariaDB) or under SQLite's single writer, so two nodes never both take
the last unit of a budget. The minute window slides (the previous minute is weighted by what
is left of it); hour and day sum the last 60 / 1440 minute rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store.accounts import bump_usage
from relay.store.db import Database
from relay.store.tables import usage_counters

MINUTE = "minute"
WINDOWS_S = (60, 3600, 86400)
KEEP = timedelta(days=2)  # minute rows older than this are pruned


@dataclass(frozen=True, slots=True)
class Limits:
    per_minute: int = 0  # 0 = unlimited
    per_hour: int = 0
    per_day: int = 0

    def __bool__(self) -> bool:
        return bool(self.per_minute or self.per_hour or self.per_day)


@dataclass(frozen=True, slots=True)
class Grant:
    granted: int
    waits_s: tuple[float, ...]  # for each send not granted, in order: when to ask again


def minute_start(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0)


async def usage(conn: AsyncConnection, subject: str, now: datetime) -> tuple[float, int, int]:
    """Sends in the sliding minute, hour and day before `now`."""
    start = minute_start(now)
    rows = await conn.execute(
        select(usage_counters.c.window_start, usage_counters.c.count).where(
            usage_counters.c.subject == subject,
            usage_counters.c.window == MINUTE,
            usage_counters.c.window_start > start - timedelta(days=1),
        )
    )
    left_of_previous = 1.0 - (now - start).total_seconds() / 60.0
    minute = 0.0
    hour = day = 0
    for window_start, count in rows:
        day += count
        if window_start > start - timedelta(hours=1):
            hour += count
        if window_start == start:
            minute += count
        elif window_start == start - timedelta(minutes=1):
            minute += count * left_of_previous
    return minute, hour, day


async def take(db: Database, subject: str, wanted: int, limits: Limits, now: datetime) -> Grant:
    """Reserve up to `wanted` sends under `limits`; the reservation counts at once."""
    async with db.write() as conn:
        # Bump first: on MariaDB the upsert locks the row, so concurrent takers queue here.
        await bump_usage(conn, subject, MINUTE, minute_start(now), wanted)
        used = await usage(conn, subject, now)
        room = wanted
        binding = (60.0, 1)
        for limit, window_s, in_use in zip(
            (limits.per_minute, limits.per_hour, limits.per_day), WINDOWS_S, used, strict=True
        ):
            if not limit:
                continue
            free = max(limit - math.ceil(in_use - wanted), 0)
            if free < room or (free == room and room < wanted):
                room, binding = free, (float(window_s), limit)
        if room < wanted:
            await bump_usage(conn, subject, MINUTE, minute_start(now), room - wanted)
    span_s, rate = binding
    # Spread the rest over the window at the permitted rate, so they come back in turn.
    waits = tuple(min(span_s, max(1.0, (i + 1) * span_s / rate)) for i in range(wanted - room))
    return Grant(room, waits)


async def count(
    conn: AsyncConnection, subject: str, now: datetime, n: int = 1, bounced: int = 0
) -> None:
    """Count sends (and hard bounces) in the subject's current minute."""
    await bump_usage(conn, subject, MINUTE, minute_start(now), n, bounced)


async def window_totals(db: Database, prefix: str, since: datetime) -> dict[str, tuple[int, int]]:
    """(sends, bounces) per subject starting with `prefix` since a time, from minute rows."""
    async with db.read() as conn:
        rows = await conn.execute(
            select(
                usage_counters.c.subject,
                func.sum(usage_counters.c.count),
                func.sum(usage_counters.c.bounces),
            )
            .where(
                usage_counters.c.window == MINUTE,
                usage_counters.c.subject.like(prefix + "%"),
                usage_counters.c.window_start >= minute_start(since),
            )
            .group_by(usage_counters.c.subject)
        )
        return {r[0]: (int(r[1] or 0), int(r[2] or 0)) for r in rows}


async def prune(
    db: Database, now: datetime, subjects: Iterable[str] = ("tenant:", "account:")
) -> int:
    """Drop minute rows no window looks at any more."""
    removed = 0
    async with db.write() as conn:
        for prefix in subjects:
            result = await conn.execute(
                delete(usage_counters).where(
                    usage_counters.c.window == MINUTE,
                    usage_counters.c.subject.like(prefix + "%"),
                    usage_counters.c.window_start < now - KEEP,
                )
            )
            removed += int(result.rowcount)
    return removed
