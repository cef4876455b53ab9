"""The numbers behind `relay status` and the queue gauges of /metrics: queue depth,
recent outcomes, suppressions, the pool, schema and database freshness.

Every query is an aggregate over an index (deliveries by state, by state and time), a
primary-key lookup, or a primary-key range (the last hour of events, found by bisecting ids,
which grow with time); none reads message bodies.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.model import FINAL_STATES
from relay.store import accounts as pool
from relay.store.db import Database, current_revision, head_revision, utcnow
from relay.store.tables import deliveries, messages, recipient_events, suppressions

_FINAL = {f.value for f in FINAL_STATES}
_MARGIN_IDS = 10_000  # rows before the bisected boundary that are read too (late writes)


async def queue_summary(db: Database, now: datetime | None = None) -> dict[str, Any]:
    """Deliveries by state, how many are not final, and the age of the oldest of those."""
    now = now or utcnow()
    async with db.read() as conn:
        by_state: dict[str, int] = dict(
            (
                await conn.execute(
                    select(deliveries.c.state, func.count()).group_by(deliveries.c.state)
                )
            ).all()
        )
        open_states = [s for s in by_state if s not in _FINAL]
        oldest = None
        if open_states:
            oldest = (
                await conn.execute(
                    select(func.min(deliveries.c.created_at)).where(
                        deliveries.c.state.in_(open_states)
                    )
                )
            ).scalar()
    return {
        "by_state": {k: int(v) for k, v in sorted(by_state.items())},
        "in_queue": int(sum(v for k, v in by_state.items() if k in open_states)),
        "oldest_queued_age_s": int((now - oldest).total_seconds()) if oldest else None,
    }


async def freshness(db: Database, now: datetime | None = None) -> dict[str, Any]:
    """Round-trip time and the newest message and event (by primary key: cheap)."""
    now = now or utcnow()
    started = time.perf_counter()
    async with db.read() as conn:
        newest_message = (
            await conn.execute(
                select(messages.c.received_at).order_by(messages.c.id.desc()).limit(1)
            )
        ).scalar()
        newest_event = (
            await conn.execute(
                select(recipient_events.c.occurred_at)
                .order_by(recipient_events.c.id.desc())
                .limit(1)
            )
        ).scalar()
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)

    def age(at: datetime | None) -> int | None:
        return int((now - at).total_seconds()) if at else None

    return {
        "query_ms": elapsed_ms,
        "newest_message_age_s": age(newest_message),
        "newest_event_age_s": age(newest_event),
    }


async def first_event_id(conn: AsyncConnection, since: datetime) -> int:
    """The lowest event id at or after `since`, bisecting the id range (events are written
    in time order, give or take a flush), so the last hour is read as an id range instead of
    scanning a table that has no index on time. About 2·log2(rows) primary-key lookups."""
    low = (await conn.execute(select(func.min(recipient_events.c.id)))).scalar()
    high = (await conn.execute(select(func.max(recipient_events.c.id)))).scalar()
    if low is None or high is None:
        return 0
    low, high = int(low), int(high) + 1  # answer in [low, high]
    while low < high:
        mid = (low + high) // 2
        at = (
            await conn.execute(
                select(recipient_events.c.occurred_at)
                .where(recipient_events.c.id >= mid)
                .order_by(recipient_events.c.id)
                .limit(1)
            )
        ).scalar()
        if at is not None and at >= since:
            high = mid
        else:
            low = mid + 1
    return low


async def gather(db: Database) -> dict[str, Any]:
    now = utcnow()
    hour_ago = now - timedelta(hours=1)
    queue = await queue_summary(db, now)
    async with db.read() as conn:
        # Ids of a late flush can be a little out of order: read some rows before the boundary.
        since_id = max(0, await first_event_id(conn, hour_ago) - _MARGIN_IDS)
        last_hour: dict[str, int] = dict(
            (
                await conn.execute(
                    select(recipient_events.c.type, func.count())
                    .where(recipient_events.c.id >= since_id)
                    .where(recipient_events.c.occurred_at >= hour_ago)
                    .group_by(recipient_events.c.type)
                )
            ).all()
        )
        suppressed: dict[str, int] = dict(
            (
                await conn.execute(
                    select(suppressions.c.reason, func.count()).group_by(suppressions.c.reason)
                )
            ).all()
        )
    accounts = [
        {
            "name": a.name,
            "paused": a.paused,
            "paused_reason": a.paused_reason,
            "paused_until": a.paused_until.isoformat() if a.paused_until else None,
            "consecutive_failures": a.consecutive_failures,
            "sent_today": a.sent_today,
        }
        for a in await pool.read_all(db, now)
    ]
    fresh = await freshness(db, now)
    revision = await current_revision(db.engine)
    sent = sum(last_hour.get(t, 0) for t in ("delivered", "bounced", "failed"))

    def rate(kind: str) -> float | None:
        return round(last_hour.get(kind, 0) / sent, 4) if sent else None

    return {
        "database": {
            "reachable": True,
            "revision": revision,
            "head": head_revision(),
            "current": revision == head_revision(),
            **fresh,
        },
        "queue": queue,
        "last_hour": {k: int(v) for k, v in sorted(last_hour.items())},
        "rates_last_hour": {"bounce": rate("bounced"), "complaint": rate("complained")},
        "suppressions": {k: int(v) for k, v in sorted(suppressed.items())},
        "accounts": accounts,
    }
