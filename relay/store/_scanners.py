"""Machine clicks that only stored data can reveal, settled while a tracking batch is written.

Input: a flush batch of `TrackEvent`s and their deliveries' owners, in the flush's
transaction. Output: the batch with clicks flagged machine when they come within a few
seconds of delivery, or when a delivery's links (two or more) are all clicked within one
second: a scanner following every link. Such a scan may straddle two flushes, so the stored
clicks of the same deliveries from the second before count too; those found to belong to a
scan are flipped to machine here, and the returned counter corrections take them (and the
opens they implied) out of the human stats. Webhooks already sent for them stay sent.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.model import EventType
from relay.store.stats import CounterKey
from relay.store.tables import links, recipient_events

if TYPE_CHECKING:  # relay.store.events imports this module
    from relay.store.events import DeliveryOwner, TrackEvent

OPENED, CLICKED = EventType.OPENED.value, EventType.CLICKED.value
SCAN_WINDOW = timedelta(seconds=1)
_IMPLIED = {"implied_by": "click"}


def flag_early_clicks(
    batch: list[TrackEvent], owners: dict[int, DeliveryOwner], window_s: float
) -> list[TrackEvent]:
    """A click within `window_s` of delivery is a link scanner, not a person."""
    window = timedelta(seconds=window_s)
    out = []
    for e in batch:
        final_at = owners[e.delivery_id].final_at
        if e.type == CLICKED and final_at is not None and e.occurred_at - final_at < window:
            e = replace(e, machine=True)
        out.append(e)
    return out


@dataclass(frozen=True, slots=True)
class _Click:
    at: datetime
    position: int | None
    machine: bool
    stored_id: int | None = None  # a row written by an earlier flush
    index: int | None = None  # a click of this batch


async def flag_scans(
    conn: AsyncConnection, batch: list[TrackEvent], owners: dict[int, DeliveryOwner]
) -> tuple[list[TrackEvent], Counter[CounterKey]]:
    """Flag the clicks of scans (all links within one second), in this batch and stored.

    Costs one grouped count of links per batch and, only for deliveries with two or more
    links clicked in this batch, one lookup of their stored clicks by (delivery_id, type)."""
    totals = await _link_counts(conn, owners)
    mine: dict[int, list[_Click]] = defaultdict(list)
    for i, e in enumerate(batch):
        if e.type == CLICKED and totals.get(e.delivery_id, 0) >= 2:
            mine[e.delivery_id].append(_Click(e.occurred_at, e.link_position, e.machine, index=i))
    if not mine:
        return batch, Counter()
    since = min(c.at for clicks in mine.values() for c in clicks) - SCAN_WINDOW
    r = recipient_events.c
    stored = await conn.execute(
        select(r.id, r.delivery_id, r.occurred_at, r.link_position, r.machine).where(
            r.delivery_id.in_(sorted(mine)), r.type == CLICKED, r.occurred_at >= since
        )
    )
    for row_id, delivery_id, at, position, machine in stored:
        mine[delivery_id].append(_Click(at, position, bool(machine), stored_id=row_id))
    flag: set[int] = set()
    flip: dict[int, set[int]] = defaultdict(set)
    for delivery_id, clicks in mine.items():
        for c in _in_scans(clicks, totals[delivery_id]):
            if c.index is not None:
                flag.add(c.index)
            elif not c.machine and c.stored_id is not None:
                flip[delivery_id].add(c.stored_id)
    batch = [replace(e, machine=True) if i in flag else e for i, e in enumerate(batch)]
    return batch, (await _flip(conn, flip, owners) if flip else Counter())


def _in_scans(clicks: list[_Click], total: int) -> list[_Click]:
    """The clicks inside any window of SCAN_WINDOW that covers `total` distinct links."""
    clicks.sort(key=lambda c: c.at)
    members: set[int] = set()
    have: Counter[int | None] = Counter()
    start = 0
    for end, c in enumerate(clicks):
        have[c.position] += 1
        while c.at - clicks[start].at > SCAN_WINDOW:
            gone = clicks[start].position
            have[gone] -= 1
            if not have[gone]:
                del have[gone]
            start += 1
        if len(have) >= total:
            members.update(range(start, end + 1))
    return [clicks[i] for i in sorted(members)]


async def _flip(
    conn: AsyncConnection, flip: dict[int, set[int]], owners: dict[int, DeliveryOwner]
) -> Counter[CounterKey]:
    """Mark stored scan clicks (and the opens they implied) machine; return the stats
    corrections: fewer human hits, and the unique human hit moved to the next human one."""
    r = recipient_events.c
    rows = list(
        await conn.execute(
            select(r.id, r.delivery_id, r.type, r.occurred_at, r.machine, r.detail)
            .where(r.delivery_id.in_(sorted(flip)), r.type.in_((OPENED, CLICKED)))
            .order_by(r.occurred_at, r.id)
        )
    )
    ids = set().union(*flip.values())
    at_of = {(row.delivery_id, row.occurred_at) for row in rows if row.id in ids}
    for row in rows:  # the open a flipped click implied (images blocked) is the scanner's too
        if row.type == OPENED and row.detail == _IMPLIED:
            if (row.delivery_id, row.occurred_at) in at_of:
                ids.add(row.id)
    per_kind: dict[tuple[int, str], list[Any]] = defaultdict(list)
    for row in rows:
        per_kind[(row.delivery_id, row.type)].append(row)
    corrections: Counter[CounterKey] = Counter()
    for (delivery_id, kind), kind_rows in per_kind.items():
        owner = owners[delivery_id]

        def key(at: datetime, metric: str) -> CounterKey:
            return (owner.tenant_id, owner.campaign_id, at, metric)  # noqa: B023 - used at once

        humans = [row for row in kind_rows if not row.machine]
        for row in humans:
            if row.id in ids:
                corrections[key(row.occurred_at, f"{kind}_human")] -= 1
        before = humans[0] if humans else None
        after = next((row for row in humans if row.id not in ids), None)
        if before is not after:
            if before is not None:
                corrections[key(before.occurred_at, f"{kind}_unique_human")] -= 1
            if after is not None:
                corrections[key(after.occurred_at, f"{kind}_unique_human")] += 1
    changed = sorted(row.id for row in rows if row.id in ids and not row.machine)
    if changed:
        await conn.execute(update(recipient_events).where(r.id.in_(changed)).values(machine=True))
    return corrections


async def _link_counts(conn: AsyncConnection, owners: dict[int, DeliveryOwner]) -> dict[int, int]:
    message_ids = sorted({o.message_id for o in owners.values()})
    rows = await conn.execute(
        select(links.c.message_id, func.count())
        .where(links.c.message_id.in_(message_ids))
        .group_by(links.c.message_id)
    )
    per_message = {int(m): int(n) for m, n in rows}
    return {d: per_message.get(o.message_id, 0) for d, o in owners.items()}
