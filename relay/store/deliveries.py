"""The outbound queue: lease due deliveries, release them, recover leases of dead workers.

Input: a `Database`, a worker name (lease owner) and the time. Output: leased `Delivery`
values (state `sending`, lease_owner/lease_expires_at set) and the raw messages they need.
MySQL/MariaDB claim with `SELECT … FOR UPDATE SKIP LOCKED`; SQLite's write transaction is
BEGIN IMMEDIATE, so only one claimer runs at a time. A delivery is never leased twice.
Leases still being worked are extended (`renew`); `complete` writes a batch of finished
attempts with one statement per table (executemany), in the caller's transaction.
"""

from __future__ import annotations

import functools
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, case, func, literal, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.model import CampaignState, Delivery, DeliveryState
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

# Unfinished deliveries go back to `deferred` if they were tried before, else `queued`.
_BACK_TO_QUEUE = case(
    (deliveries.c.attempts > 0, str(DeliveryState.DEFERRED)), else_=str(DeliveryState.QUEUED)
)


async def lease_due(
    db: Database, owner: str, limit: int, now: datetime, lease_time_s: float
) -> list[Delivery]:
    """Claim up to `limit` due deliveries for `owner` until now + lease_time_s.

    One state at a time, so each query walks the (state, next_attempt_at) index in order and
    stops after `limit` rows: an ORDER BY across both states would sort, and on MySQL lock,
    every due row. Retries get up to half the room first, new mail the rest (Postfix qmgr:
    fairness between new and deferred mail), then retries any room left.
    """
    paused = select(campaigns.c.id).where(campaigns.c.state == str(CampaignState.PAUSED))

    def due(state: DeliveryState, n: int) -> Any:
        query = (
            select(deliveries.c.id)
            .where(
                deliveries.c.state == str(state),
                deliveries.c.next_attempt_at <= now,
                (deliveries.c.campaign_id.is_(None)) | (deliveries.c.campaign_id.not_in(paused)),
            )
            .order_by(deliveries.c.next_attempt_at)
            .limit(n)
        )
        if db.is_mysql:
            query = query.with_for_update(skip_locked=True, of=deliveries)
        return query

    expires = now + timedelta(seconds=lease_time_s)
    async with db.write() as conn:
        share = max(limit // 2, 1)
        ids = [r.id for r in await conn.execute(due(DeliveryState.DEFERRED, share))]
        retries = len(ids)
        if len(ids) < limit:
            ids += [r.id for r in await conn.execute(due(DeliveryState.QUEUED, limit - len(ids)))]
        if len(ids) < limit and retries == share:  # retries may have more than their share
            more = due(DeliveryState.DEFERRED, limit - len(ids)).where(
                deliveries.c.id.not_in(ids[:retries])
            )
            ids += [r.id for r in await conn.execute(more)]
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
        result = await conn.execute(
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
                deliveries.c.no_suppression,
                messages.c.mail_from,
            )
            .join(messages, messages.c.id == deliveries.c.message_id)
            .where(deliveries.c.id.in_(ids))
            .order_by(deliveries.c.id)
        )
        rows = result.all()
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
                no_suppression=bool(r.no_suppression),
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
    """Write finished attempts in the caller's transaction, a few statements per batch.

    `updates`: deliveries columns plus `b_id` (the row) and `b_tried` (1 adds an attempt);
    `attempts`/`events`: delivery_attempts / recipient_events rows; `counters`: (recipients
    column, tenant_id, address key, time, is_bounce) to bump by one.
    """
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in sorted(updates, key=lambda r: r["b_id"]):  # one lock order across workers
        shapes.setdefault(tuple(sorted(row)), []).append(row)
    for group in shapes.values():
        await _update_many(
            conn,
            deliveries,
            group,
            where=lambda v: deliveries.c.id == v("b_id"),
            extra=lambda v: {"attempts": deliveries.c.attempts + v("b_tried")},
        )
    if attempts:
        await conn.execute(delivery_attempts.insert(), list(attempts))
    bumps: dict[tuple[str, bool], Counter[tuple[int, str]]] = {}
    at = {}
    for column, tenant_id, key, when, bounce in counters:
        bumps.setdefault((column, bounce), Counter())[(tenant_id, key)] += 1
        at[(column, bounce)] = when
    for (column, bounce), counts in bumps.items():
        col = recipients.c[column]
        rows = [
            {"b_tenant": t, "b_email": e, "b_n": n, "last_seen_at": at[(column, bounce)]}
            for (t, e), n in sorted(counts.items())
        ]
        if bounce:
            for row in rows:
                row["last_bounce_at"] = row["last_seen_at"]
        await _update_many(
            conn,
            recipients,
            rows,
            where=lambda v: (
                (recipients.c.tenant_id == v("b_tenant")) & (recipients.c.email == v("b_email"))
            ),
            extra=functools.partial(_bump, col),
        )
    if events:
        await conn.execute(recipient_events.insert(), list(events))


_CHUNK = 500


def _bump(col: Any, value: Callable[[str], Any]) -> dict[str, Any]:
    return {col.name: col + value("b_n")}


async def _update_many(
    conn: AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    where: Callable[[Callable[[str], Any]], Any],
    extra: Callable[[Callable[[str], Any]], dict[str, Any]],
) -> None:
    """UPDATE many rows with per-row values: keys without `b_` are columns to set; `where`
    and `extra` build the match and computed SETs from a value getter.

    SQLite: executemany (in-process, one statement per row is cheap). MySQL: executemany
    would be one round trip per row, so one `UPDATE t, (SELECT … UNION ALL …) v` per chunk,
    with values shared by every row inlined as constants.
    """
    if not rows:
        return
    keys = sorted(rows[0])
    if conn.dialect.name == "sqlite":

        def param(k: str) -> Any:
            return bindparam(k)

        columns: dict[str, Any] = {k: bindparam(k) for k in keys if not k.startswith("b_")}
        stmt = update(table).where(where(param)).values(**columns, **extra(param))
        await conn.execute(stmt, list(rows))
        return
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        same = {k for k in keys if all(r[k] == chunk[0][k] for r in chunk[1:])}
        varying = [k for k in keys if k not in same or k.startswith("b_")]
        selects = [select(*(literal(r[k]).label(k) for k in varying)) for r in chunk]
        v = (union_all(*selects) if len(selects) > 1 else selects[0]).subquery("v")

        def value(k: str, v: Any = v, first: dict[str, Any] = chunk[0], vary: Any = varying) -> Any:
            return v.c[k] if k in vary else first[k]

        columns = {k: value(k) for k in keys if not k.startswith("b_")}
        stmt = update(table).where(where(value)).values(**columns, **extra(value))
        await conn.execute(stmt)


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
                    messages.c.render_plan,
                    tenants.c.settings.label("tenant_settings"),
                    campaigns.c.settings.label("campaign_settings"),
                )
                .join(tenants, tenants.c.id == messages.c.tenant_id)
                .outerjoin(campaigns, campaigns.c.id == messages.c.campaign_id)
                .where(messages.c.id.in_(wanted))
            )
        ).all()
        found_links: dict[int, dict[str, int]] = {i: {} for i in wanted}
        for link in await conn.execute(
            select(links.c.message_id, links.c.url, links.c.id).where(
                links.c.message_id.in_(wanted)
            )
        ):
            found_links[link.message_id][link.url] = int(link.id)
    found: dict[int, StoredMessage] = {}
    for r in rows:
        raw = bytes(r.raw or b"")
        inputs = RenderInputs(
            found_links[r.id],
            dict(r.tenant_settings or {}),
            dict(r.campaign_settings or {}),
            dict(r.options or {}),
            bytes(r.render_plan) if r.render_plan is not None else None,
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


def unheld(now: datetime) -> dict[str, Any]:
    """Column values that take a `held` delivery back to the queue: `deferred` if it was
    tried before, else `queued`, due when it was due anyway (a scheduled send time, a
    retry's backoff) or now if that time has passed. Never "due now" outright: releasing a
    hold must not send scheduled mail early or skip a backoff."""
    due = deliveries.c.next_attempt_at
    return {
        "state": _BACK_TO_QUEUE,
        "next_attempt_at": case((due < now, now), else_=due),
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
