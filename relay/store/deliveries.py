"""The outbound queue: lease due deliveries, release them, recover leases of dead workers.

Input: a `Database`, a worker name (lease owner) and the time. Output: leased `Delivery`
values (state `sending`, lease_owner/lease_expires_at set) and the raw messages they need.
MySQL/MariaDB claim with `SELECT … FOR UPDATE SKIP LOCKED`; SQLite's write transaction is
BEGIN IMMEDIATE, so only one claimer runs at a time. A delivery is never leased twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, select, update

from relay.model import DUE_STATES, CampaignState, Delivery, DeliveryState
from relay.store.db import Database
from relay.store.tables import campaigns, deliveries, messages

_DUE = sorted(str(s) for s in DUE_STATES)
# Unfinished deliveries go back to `deferred` if they were tried before, else `queued`.
_BACK_TO_QUEUE = case(
    (deliveries.c.attempts > 0, str(DeliveryState.DEFERRED)), else_=str(DeliveryState.QUEUED)
)


async def lease_due(
    db: Database, owner: str, limit: int, now: datetime, lease_time_s: float
) -> list[Delivery]:
    """Claim up to `limit` due deliveries for `owner` until now + lease_time_s."""
    paused = select(campaigns.c.id).where(campaigns.c.state == str(CampaignState.PAUSED))
    query = (
        select(deliveries.c.id)
        .where(
            deliveries.c.state.in_(_DUE),
            deliveries.c.next_attempt_at <= now,
            (deliveries.c.campaign_id.is_(None)) | (deliveries.c.campaign_id.not_in(paused)),
        )
        .order_by(deliveries.c.next_attempt_at)
        .limit(limit)
    )
    if db.is_mysql:
        query = query.with_for_update(skip_locked=True, of=deliveries)
    expires = now + timedelta(seconds=lease_time_s)
    async with db.write() as conn:
        ids = [row.id for row in await conn.execute(query)]
        if not ids:
            return []
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids))
            .values(
                state=str(DeliveryState.SENDING),
                lease_owner=owner,
                lease_expires_at=expires,
                updated_at=now,
            )
        )
        rows = await conn.execute(
            select(
                deliveries.c.id,
                deliveries.c.message_id,
                deliveries.c.tenant_id,
                deliveries.c.campaign_id,
                deliveries.c.recipient,
                deliveries.c.domain,
                deliveries.c.attempts,
                deliveries.c.created_at,
                messages.c.mail_from,
            )
            .join(messages, messages.c.id == deliveries.c.message_id)
            .where(deliveries.c.id.in_(ids))
            .order_by(deliveries.c.id)
        )
        return [
            Delivery(
                id=r.id,
                message_id=r.message_id,
                tenant_id=r.tenant_id,
                recipient=r.recipient,
                domain=r.domain,
                mail_from=r.mail_from,
                attempts=r.attempts,
                created_at=r.created_at,
                campaign_id=r.campaign_id,
            )
            for r in rows
        ]


async def load_raw(db: Database, message_ids: Iterable[int]) -> dict[int, bytes]:
    """The stored originals of these messages (zlib-encoded ones are inflated)."""
    import zlib

    wanted = sorted(set(message_ids))
    if not wanted:
        return {}
    async with db.read() as conn:
        rows = await conn.execute(
            select(messages.c.id, messages.c.raw, messages.c.raw_encoding).where(
                messages.c.id.in_(wanted)
            )
        )
        found: dict[int, bytes] = {}
        for r in rows:
            raw = bytes(r.raw or b"")
            found[r.id] = zlib.decompress(raw) if r.raw_encoding == "zlib" else raw
        return found


async def release(db: Database, owner: str, ids: Sequence[int], now: datetime) -> int:
    """Give unfinished leases back to the queue, due now, without counting an attempt."""
    if not ids:
        return 0
    async with db.write() as conn:
        result = await conn.execute(
            update(deliveries)
            .where(
                deliveries.c.id.in_(list(ids)),
                deliveries.c.lease_owner == owner,
                deliveries.c.state == str(DeliveryState.SENDING),
            )
            .values(**_requeued(now))
        )
        return int(result.rowcount)


def _requeued(now: datetime) -> dict[str, Any]:
    """Column values that hand a leased delivery back to the queue, due now."""
    return {
        "state": _BACK_TO_QUEUE,
        "lease_owner": None,
        "lease_expires_at": None,
        "next_attempt_at": now,
        "updated_at": now,
    }


async def recover_expired(db: Database, now: datetime) -> int:
    """Return deliveries whose lease ran out (their worker died) to the queue."""
    async with db.write() as conn:
        result = await conn.execute(
            update(deliveries)
            .where(
                deliveries.c.state == str(DeliveryState.SENDING),
                deliveries.c.lease_expires_at < now,
            )
            .values(**_requeued(now))
        )
        return int(result.rowcount)


async def state_counts(db: Database) -> dict[str, int]:
    """How many deliveries are in each state (for tests, status and benchmarks)."""
    from sqlalchemy import func

    async with db.read() as conn:
        rows = await conn.execute(
            select(deliveries.c.state, func.count()).group_by(deliveries.c.state)
        )
        return {r[0]: int(r[1]) for r in rows}
