"""Retention: drop raw message bodies and old events in small batches.

A body is pruned only when it is older than `retention.messages_days` and every delivery of
its message is in a final state (nothing left to send or retry). The message row, its
deliveries and attempts stay, so history and stats survive. Each batch is its own short
transaction, so the queue is never locked for long.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, select, update

from relay.model import FINAL_STATES
from relay.store import suppressions as suppression_list
from relay.store.db import Database, utcnow
from relay.store.tables import deliveries, messages, recipient_events

Progress = Callable[[str, int], None]


@dataclass(frozen=True, slots=True)
class PruneResult:
    bodies: int
    events: int
    suppressions: int


async def prune(
    db: Database,
    messages_days: int,
    events_days: int,
    batch: int = 500,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> PruneResult:
    now = now or utcnow()
    bodies = await _prune_bodies(db, now - timedelta(days=messages_days), batch, progress)
    events = await _prune_events(db, now - timedelta(days=events_days), batch, progress)
    async with db.write() as conn:  # moves the change counters: caches drop them too
        expired = await suppression_list.prune(conn, now)
    return PruneResult(bodies, events, expired)


async def _prune_bodies(
    db: Database, before: datetime, batch: int, progress: Progress | None
) -> int:
    unfinished = exists().where(
        deliveries.c.message_id == messages.c.id,
        deliveries.c.state.not_in([s.value for s in FINAL_STATES]),
    )
    total, after_id = 0, 0
    while True:
        async with db.write() as conn:
            ids = (
                (
                    await conn.execute(
                        select(messages.c.id)
                        .where(
                            messages.c.id > after_id,
                            messages.c.received_at < before,
                            messages.c.raw.is_not(None),
                            ~unfinished,
                        )
                        .order_by(messages.c.id)
                        .limit(batch)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                return total
            await conn.execute(
                update(messages)
                .where(messages.c.id.in_(ids))
                .values(raw=None, render_plan=None, pruned_at=utcnow())
            )
        total += len(ids)
        after_id = ids[-1]
        if progress:
            progress("bodies", len(ids))


async def _prune_events(
    db: Database, before: datetime, batch: int, progress: Progress | None
) -> int:
    total = 0
    while True:
        async with db.write() as conn:
            ids = (
                (
                    await conn.execute(
                        select(recipient_events.c.id)
                        .where(recipient_events.c.occurred_at < before)
                        .order_by(recipient_events.c.id)
                        .limit(batch)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                return total
            await conn.execute(delete(recipient_events).where(recipient_events.c.id.in_(ids)))
        total += len(ids)
        if progress:
            progress("events", len(ids))
