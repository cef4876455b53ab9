"""Writing accepted messages: one transaction for a batch of messages (group commit).

Input: `NewMessage`s prepared by intake (message row values + one row per recipient).
Output: the new message ids. Side effects: inserts `messages`, `deliveries`, upserts
`recipients` (counts, first/last seen); campaigns are created on first use. The batch is
written by synchronous code (`write_batch`, run by `Database.run_write`): on SQLite one thread
hand-off per batch instead of several per statement.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store import stats
from relay.store.db import Database, utcnow
from relay.store.suppressions import COUNTER as SUPPRESSIONS
from relay.store.suppressions import SuppressionCache, read_counter_sync, suppressed_among_sync
from relay.store.tables import campaigns, deliveries, links, messages, recipients, tenants


@dataclass(slots=True)
class NewRecipient:
    recipient: str  # as given, domain normalized
    key: str  # lowercased matching key
    domain: str
    rcpt_type: str  # to | cc | bcc


@dataclass(slots=True)
class NewMessage:
    """One accepted message; `row` holds the `messages` column values except ids."""

    tenant_id: int
    row: dict[str, Any]
    recipients: list[NewRecipient]
    held: bool = False
    check_suppression: bool = True
    next_attempt_at: datetime | None = None
    states: dict[str, str] = field(default_factory=dict)  # key → state, filled on insert
    links: list[str] = field(default_factory=list)  # tracked URLs, stored once per message


async def campaign_for(db: Database, tenant_id: int, name: str) -> tuple[int, str]:
    """The campaign's (id, state), created on first use; safe against a concurrent create."""
    query = select(campaigns.c.id, campaigns.c.state).where(
        campaigns.c.tenant_id == tenant_id, campaigns.c.name == name
    )
    async with db.read() as conn:
        row = (await conn.execute(query)).first()
    if row is not None:
        return int(row.id), str(row.state)
    try:
        async with db.write() as conn:
            result = await conn.execute(
                campaigns.insert().values(
                    tenant_id=tenant_id,
                    name=name,
                    state="active",
                    settings={},
                    created_at=utcnow(),
                )
            )
            return int(result.inserted_primary_key[0]), "active"  # type: ignore[index]
    except IntegrityError:
        # Another session created it between our read and our insert.
        async with db.read() as conn:
            row = (await conn.execute(query)).one()
        return int(row.id), str(row.state)


def write_batch(
    conn: Connection, batch: Sequence[NewMessage], cache: SuppressionCache
) -> tuple[list[int], bool]:
    """The group commit's transaction body: (message ids, whether `cache` was current).

    Reads the suppression change counter in the transaction: unchanged, the in-memory copy
    answers; changed, the table does (the caller reloads the copy after the commit).
    """
    current = read_counter_sync(conn, SUPPRESSIONS) == cache.version
    return insert_batch_sync(conn, batch, cache if current else None), current


async def insert_batch(
    conn: AsyncConnection,
    batch: Sequence[NewMessage],
    suppressions: SuppressionCache | None = None,
) -> list[int]:
    """Insert every message of the batch with its deliveries; returns message ids in order.

    `suppressions`: a refreshed in-memory copy to check recipients against; without one,
    one query per tenant in the batch.
    """
    return await conn.run_sync(insert_batch_sync, batch, suppressions)


def insert_batch_sync(
    conn: Connection,
    batch: Sequence[NewMessage],
    suppressions: SuppressionCache | None = None,
) -> list[int]:
    """`insert_batch` on a synchronous connection."""
    now = utcnow()
    delivery_rows: list[dict[str, Any]] = []
    link_rows: list[dict[str, Any]] = []
    seen: dict[tuple[int, str], int] = {}
    if suppressions is None:
        wanted: dict[int, set[str]] = {}
        for item in batch:
            if item.check_suppression:
                wanted.setdefault(item.tenant_id, set()).update(r.key for r in item.recipients)
        found = {t: suppressed_among_sync(conn, t, keys, now) for t, keys in wanted.items()}

        def suppressed(tenant_id: int, key: str) -> bool:
            return key in found.get(tenant_id, ())

    else:
        cache = suppressions

        def suppressed(tenant_id: int, key: str) -> bool:
            return cache.reason_for(tenant_id, key, now) is not None

    # One multi-row INSERT … RETURNING, in parameter order (SQLAlchemy "insertmanyvalues").
    result = conn.execute(
        messages.insert().returning(messages.c.id, sort_by_parameter_order=True),
        [item.row for item in batch],
    )
    ids = [int(row.id) for row in result]
    for item, message_id in zip(batch, ids, strict=True):
        link_rows.extend(
            {"message_id": message_id, "position": i, "url": url}
            for i, url in enumerate(item.links)
        )
        check = item.check_suppression
        for r in item.recipients:
            state = "held" if item.held else "queued"
            if check and suppressed(item.tenant_id, r.key):
                state = "suppressed"
            item.states[r.key] = state
            delivery_rows.append(
                {
                    "message_id": message_id,
                    "tenant_id": item.tenant_id,
                    "campaign_id": item.row.get("campaign_id"),
                    "recipient": r.recipient,
                    "recipient_key": r.key,
                    "domain": r.domain,
                    "rcpt_type": r.rcpt_type,
                    "state": state,
                    "attempts": 0,
                    "next_attempt_at": item.next_attempt_at or now,
                    "created_at": now,
                    "updated_at": now,
                    "final_at": now if state == "suppressed" else None,
                    # The override holds at the scheduler's pre-send check too.
                    "no_suppression": not check,
                }
            )
            counter_key = (item.tenant_id, r.key)
            seen[counter_key] = seen.get(counter_key, 0) + 1
    if delivery_rows:
        conn.execute(deliveries.insert(), delivery_rows)
    if link_rows:
        conn.execute(links.insert(), link_rows)
    _upsert_recipients(conn, seen, now)
    stats.bump_many_sync(conn, _stat_counts(batch, now))
    return ids


def _stat_counts(batch: Sequence[NewMessage], now: datetime) -> dict[stats.CounterKey, int]:
    """'sent' per delivery row accepted, 'suppressed' for those skipped at intake."""
    counts: dict[stats.CounterKey, int] = {}
    for item in batch:
        campaign_id = item.row.get("campaign_id")
        for state in item.states.values():
            metric = "suppressed" if state == "suppressed" else "sent"
            key = (item.tenant_id, campaign_id, now, metric)
            counts[key] = counts.get(key, 0) + 1
    return counts


def _upsert_recipients(conn: Connection, seen: dict[tuple[int, str], int], now: datetime) -> None:
    # Sorted so that concurrent batches take row locks in the same order (no deadlocks).
    rows = [
        {
            "tenant_id": t,
            "email": k,
            "status": "active",
            "first_seen_at": now,
            "last_seen_at": now,
            "messages_count": n,
        }
        for (t, k), n in sorted(seen.items())
    ]
    if not rows:
        return
    conn.execute(_recipients_upsert(conn.dialect.name), rows)


@functools.cache
def _recipients_upsert(dialect: str) -> Any:
    """Built once: making `excluded`/`inserted` copies the column collection every time."""
    if dialect in ("mysql", "mariadb"):
        mq = mysql_insert(recipients)
        return mq.on_duplicate_key_update(
            last_seen_at=mq.inserted.last_seen_at,
            messages_count=recipients.c.messages_count + mq.inserted.messages_count,
        )
    sq = sqlite_insert(recipients)
    return sq.on_conflict_do_update(
        index_elements=["tenant_id", "email"],
        set_={
            "last_seen_at": sq.excluded.last_seen_at,
            "messages_count": recipients.c.messages_count + sq.excluded.messages_count,
        },
    )


@dataclass(frozen=True, slots=True)
class RenderInputs:
    """What rendering a message needs besides its bytes: tracked links and settings."""

    links: dict[str, int]  # url → links.id
    tenant_settings: dict[str, Any]
    campaign_settings: dict[str, Any]
    options: dict[str, Any]
    plan: bytes | None = None  # messages.render_plan


async def render_inputs(conn: AsyncConnection, message_id: int) -> RenderInputs:
    row = (
        await conn.execute(
            select(
                messages.c.options,
                messages.c.render_plan,
                tenants.c.settings.label("tenant_settings"),
                campaigns.c.settings.label("campaign_settings"),
            )
            .join(tenants, tenants.c.id == messages.c.tenant_id)
            .outerjoin(campaigns, campaigns.c.id == messages.c.campaign_id)
            .where(messages.c.id == message_id)
        )
    ).one()
    found = await conn.execute(
        select(links.c.url, links.c.id).where(links.c.message_id == message_id)
    )
    return RenderInputs(
        {url: int(link_id) for url, link_id in found},
        dict(row.tenant_settings or {}),
        dict(row.campaign_settings or {}),
        dict(row.options or {}),
        bytes(row.render_plan) if row.render_plan is not None else None,
    )
