"""The outbound queue: lease due deliveries, release them, recover leases of dead workers.

Input: a `Database`, a worker name (lease owner) and the time. Output: leased `Delivery`
values (state `sending`, lease_owner/lease_expires_at set) and the raw messages they need.
MySQL/MariaDB claim with `SELECT … FOR UPDATE SKIP LOCKED`; SQLite's write transaction is
BEGIN IMMEDIATE, so only one claimer runs at a time. A delivery is never leased twice.
Leases still being worked are extended (`renew`); `complete` writes a batch of finished
attempts with one statement per table (executemany), in the caller's transaction.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.model import DUE_STATES, CampaignState, Delivery, DeliveryState
from relay.store.db import Database
from relay.store.messages import RenderInputs
from relay.store.tables import (
    campaigns,
    deliveries,
    delivery_attempts,
    links,
    messages,
    recipient_events,
    recipients,
    tenants,
)

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
                deliveries.c.recipient_key,
                deliveries.c.domain,
                deliveries.c.attempts,
                deliveries.c.created_at,
                messages.c.mail_from,
            )
            .join(messages, messages.c.id == deliveries.c.message_id)
            .where(deliveries.c.id.in_(ids))
            .order_by(deliveries.c.id)
        )
        rows = rows.all()
        # Retries: when the first attempt was (max_age counts from there, not from waiting).
        tried = [r.id for r in rows if r.attempts > 0]
        first: dict[int, datetime] = {}
        if tried:
            found = await conn.execute(
                select(delivery_attempts.c.delivery_id, func.min(delivery_attempts.c.started_at))
                .where(delivery_attempts.c.delivery_id.in_(tried))
                .group_by(delivery_attempts.c.delivery_id)
            )
            first = {int(i): at for i, at in found}
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
                recipient_key=r.recipient_key,
                first_attempt_at=first.get(r.id),
            )
            for r in rows
        ]


async def renew(
    db: Database, owner: str, ids: Sequence[int], now: datetime, lease_time_s: float
) -> set[int]:
    """Extend `owner`'s leases on these deliveries to now + lease_time_s; returns the ids
    still held (a lease already recovered by another worker is not taken back)."""
    if not ids:
        return set()
    wanted = sorted(ids)
    async with db.write() as conn:
        await conn.execute(
            update(deliveries)
            .where(
                deliveries.c.id.in_(wanted),
                deliveries.c.lease_owner == owner,
                deliveries.c.state == str(DeliveryState.SENDING),
            )
            .values(lease_expires_at=now + timedelta(seconds=lease_time_s))
        )
        return await owned(conn, owner, wanted)


async def owned(conn: AsyncConnection, owner: str, ids: Iterable[int]) -> set[int]:
    """Of these deliveries, those `owner` still holds the lease on (locked on MySQL until
    the caller's transaction ends, so nobody recovers them in between)."""
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    query = select(deliveries.c.id).where(
        deliveries.c.id.in_(wanted), deliveries.c.lease_owner == owner
    )
    if conn.dialect.name != "sqlite":
        query = query.with_for_update()
    return {int(r.id) for r in await conn.execute(query)}


async def complete(
    conn: AsyncConnection,
    updates: Sequence[dict[str, Any]],
    attempts: Sequence[dict[str, Any]],
    counters: Sequence[tuple[str, int, str, datetime, bool]],
    events: Sequence[dict[str, Any]],
) -> None:
    """Write finished attempts in the caller's transaction, one executemany per shape.

    `updates`: deliveries columns plus `b_id` (the row) and `b_tried` (1 adds an attempt);
    `attempts`/`events`: delivery_attempts / recipient_events rows; `counters`: (recipients
    column, tenant_id, address key, time, is_bounce) to bump by one.
    """
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in sorted(updates, key=lambda r: r["b_id"]):  # one lock order across workers
        shapes.setdefault(tuple(sorted(row)), []).append(row)
    for keys, group in shapes.items():
        columns = {k: bindparam(k) for k in keys if not k.startswith("b_")}
        stmt = (
            update(deliveries)
            .where(deliveries.c.id == bindparam("b_id"))
            .values(attempts=deliveries.c.attempts + bindparam("b_tried"), **columns)
        )
        await conn.execute(stmt, group)
    if attempts:
        await conn.execute(delivery_attempts.insert(), list(attempts))
    by_column: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for column, tenant_id, key, at, bounce in sorted(counters, key=lambda c: (c[1], c[2])):
        by_column.setdefault((column, bounce), []).append(
            {"b_tenant": tenant_id, "b_email": key, "b_at": at}
        )
    for (column, bounce), group in by_column.items():
        col = recipients.c[column]
        changes: dict[str, Any] = {column: col + 1, "last_seen_at": bindparam("b_at")}
        if bounce:
            changes["last_bounce_at"] = bindparam("b_at")
        stmt = (
            update(recipients)
            .where(
                recipients.c.tenant_id == bindparam("b_tenant"),
                recipients.c.email == bindparam("b_email"),
            )
            .values(**changes)
        )
        await conn.execute(stmt, group)
    if events:
        await conn.execute(recipient_events.insert(), list(events))


async def load_raw(db: Database, message_ids: Iterable[int]) -> dict[int, bytes]:
    """The stored originals of these messages (zlib-encoded ones are inflated)."""
    return {i: m.raw for i, m in (await load_messages(db, message_ids)).items()}


@dataclass(frozen=True, slots=True)
class StoredMessage:
    raw: bytes  # the stored original, inflated
    inputs: RenderInputs  # tracked links and tracking settings for rendering


async def load_messages(db: Database, message_ids: Iterable[int]) -> dict[int, StoredMessage]:
    """What the scheduler needs of these messages, in one read (two queries)."""
    wanted = sorted(set(message_ids))
    if not wanted:
        return {}
    async with db.read() as conn:
        rows = (
            await conn.execute(
                select(
                    messages.c.id,
                    messages.c.raw,
                    messages.c.raw_encoding,
                    messages.c.options,
                    tenants.c.settings.label("tenant_settings"),
                    campaigns.c.settings.label("campaign_settings"),
                )
                .join(tenants, tenants.c.id == messages.c.tenant_id)
                .outerjoin(campaigns, campaigns.c.id == messages.c.campaign_id)
                .where(messages.c.id.in_(wanted))
            )
        ).all()
        found_links: dict[int, dict[str, int]] = {i: {} for i in wanted}
        for r in await conn.execute(
            select(links.c.message_id, links.c.url, links.c.id).where(
                links.c.message_id.in_(wanted)
            )
        ):
            found_links[r.message_id][r.url] = int(r.id)
    found: dict[int, StoredMessage] = {}
    for r in rows:
        raw = bytes(r.raw or b"")
        inputs = RenderInputs(
            found_links[r.id],
            dict(r.tenant_settings or {}),
            dict(r.campaign_settings or {}),
            dict(r.options or {}),
        )
        found[r.id] = StoredMessage(
            zlib.decompress(raw) if r.raw_encoding == "zlib" else raw, inputs
        )
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
    expired = (
        deliveries.c.state == str(DeliveryState.SENDING),
        deliveries.c.lease_expires_at < now,
    )
    # A plain read first (by the lease_expires_at index): usually nothing has expired, and
    # a locking range UPDATE would contend with the live workers' row locks (deadlocks on
    # MariaDB). Then update only those rows, re-checking the condition.
    async with db.read() as conn:
        ids = [r.id for r in await conn.execute(select(deliveries.c.id).where(*expired))]
    if not ids:
        return 0
    async with db.write() as conn:
        result = await conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(sorted(ids)), *expired)
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
