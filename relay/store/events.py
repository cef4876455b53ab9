"""Recipient events from the tracking endpoints: opens, clicks, unsubscribes.

Input: batches of `TrackEvent`s from the web event buffer. Output: `recipient_events` rows
(with first-of-kind and machine flags settled against what is already stored), bumped stats
counters and recipient engagement counts, all in one transaction. Also the lookups the
tracking endpoints need (link URL, delivery owner) and the per-message event listing.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import false, select
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.model import EventType
from relay.store import _scanners, stats, suppressions, webhooks
from relay.store.tables import deliveries, links, recipient_events

OPENED, CLICKED = EventType.OPENED.value, EventType.CLICKED.value


@dataclass(frozen=True, slots=True)
class TrackEvent:
    type: str  # 'opened' | 'clicked'
    delivery_id: int
    occurred_at: datetime
    machine: bool = False  # already known to be a machine (user agent, network, HEAD)
    link_id: int = 0
    link_position: int | None = None
    url: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    implied: bool = False  # an open inferred from a click (images blocked)


@dataclass(frozen=True, slots=True)
class DeliveryOwner:
    id: int
    tenant_id: int
    campaign_id: int | None
    message_id: int
    recipient_key: str
    state: str
    final_at: datetime | None


async def delivery_owner(conn: AsyncConnection, delivery_id: int) -> DeliveryOwner | None:
    row = (
        await conn.execute(select(*_OWNER_COLUMNS).where(deliveries.c.id == delivery_id))
    ).first()
    return DeliveryOwner(*row) if row else None


_OWNER_COLUMNS = (
    deliveries.c.id,
    deliveries.c.tenant_id,
    deliveries.c.campaign_id,
    deliveries.c.message_id,
    deliveries.c.recipient_key,
    deliveries.c.state,
    deliveries.c.final_at,
)


async def link_target(conn: AsyncConnection, link_id: int) -> tuple[int, int, str] | None:
    """(message_id, position, url) of a tracked link."""
    row = (
        await conn.execute(
            select(links.c.message_id, links.c.position, links.c.url).where(links.c.id == link_id)
        )
    ).first()
    return (int(row[0]), int(row[1]), str(row[2])) if row else None


async def click_target(
    conn: AsyncConnection, link_id: int, delivery_id: int
) -> tuple[int, int, str] | None:
    """(message_id, position, url) of a tracked link, if it belongs to the delivery's
    message: one round trip, two primary-key lookups."""
    row = (
        await conn.execute(
            select(links.c.message_id, links.c.position, links.c.url)
            .join(deliveries, deliveries.c.message_id == links.c.message_id)
            .where(links.c.id == link_id, deliveries.c.id == delivery_id)
        )
    ).first()
    return (int(row[0]), int(row[1]), str(row[2])) if row else None


async def delivery_message(conn: AsyncConnection, delivery_id: int) -> int | None:
    value = (
        await conn.execute(select(deliveries.c.message_id).where(deliveries.c.id == delivery_id))
    ).scalar()
    return int(value) if value is not None else None


async def record_tracking(
    conn: AsyncConnection, batch: list[TrackEvent], machine_click_window_s: float
) -> int:
    """Store a batch of opens and clicks in the caller's transaction; returns rows written.

    Events for deliveries that no longer exist (pruned) are skipped. Machine flags added
    here need stored data: a click within `machine_click_window_s` of delivery, and a
    delivery whose links (two or more) were all hit within one second, counting the clicks
    the flushes before stored in that second (relay.store._scanners).
    """
    ids = sorted({e.delivery_id for e in batch})
    if not ids:
        return 0
    owners = {
        r.id: DeliveryOwner(*r)
        for r in await conn.execute(select(*_OWNER_COLUMNS).where(deliveries.c.id.in_(ids)))
    }
    batch = [e for e in batch if e.delivery_id in owners]
    batch = _scanners.flag_early_clicks(batch, owners, machine_click_window_s)
    # Before reading what is stored: a scan straddling the last flush flips stored clicks.
    batch, corrections = await _scanners.flag_scans(conn, batch, owners)
    # What is already stored: (delivery, type) seen at all, and seen from a human.
    seen, seen_human = await _seen(conn, sorted(owners))

    inserts: list[dict[str, Any]] = []
    counts: Counter[stats.CounterKey] = Counter(corrections)
    engagement: dict[tuple[int, str], dict[str, Any]] = defaultdict(
        lambda: {"open_count": 0, "click_count": 0, "last_open_at": None, "last_click_at": None}
    )
    for event in sorted(batch, key=lambda e: e.occurred_at):
        owner = owners[event.delivery_id]
        todo = [event]
        if event.type == CLICKED and (event.delivery_id, OPENED) not in seen:
            # A click proves the mail was opened even when images were blocked.
            todo.insert(
                0,
                replace(event, type=OPENED, implied=True, url=None, link_id=0, link_position=None),
            )
        for e in todo:
            key = (e.delivery_id, e.type)
            unique = key not in seen
            unique_human = not e.machine and key not in seen_human
            seen.add(key)
            if not e.machine:
                seen_human.add(key)
            inserts.append(_row(e, owner, unique))

            metrics = [e.type]
            metrics += [f"{e.type}_human"] if not e.machine else []
            metrics += [f"{e.type}_unique"] if unique else []
            metrics += [f"{e.type}_unique_human"] if unique_human else []
            for metric in metrics:
                counts[(owner.tenant_id, owner.campaign_id, e.occurred_at, metric)] += 1
            eng = engagement[(owner.tenant_id, owner.recipient_key)]
            field = "open" if e.type == OPENED else "click"
            eng[f"{field}_count"] += 1
            eng[f"last_{field}_at"] = e.occurred_at
    if inserts:
        await _insert_events(conn, inserts)
        await webhooks.enqueue_many(conn, [_hook(row) for row in inserts if not row["detail"]])
    await stats.bump_many(conn, counts)
    if engagement:
        # One executemany, not one UPDATE per recipient: a flush may touch thousands.
        ts = _driver_time(conn)
        await conn.exec_driver_sql(
            _engagement_sql(conn.dialect.paramstyle),
            [
                (
                    eng["open_count"],
                    eng["click_count"],
                    ts(eng["last_open_at"]),
                    ts(eng["last_click_at"]),
                    tenant_id,
                    key,
                )
                for (tenant_id, key), eng in sorted(engagement.items())
            ],
        )
    return len(inserts)


async def _seen(
    conn: AsyncConnection, delivery_ids: list[int]
) -> tuple[set[tuple[int, str]], set[tuple[int, str]]]:
    """(delivery, type) pairs already stored at all, and from a human.

    EXISTS probes on the (delivery_id, type) index stop at the first row; reading the
    distinct (delivery, type, machine) of every stored event instead cost a flush more for
    each open a delivery already had (a pixel hit again and again: 75 → 130 µs an event)."""
    r = recipient_events.c
    kinds = (OPENED, CLICKED)

    def probe(kind: str, human: bool) -> Any:
        query = select(r.id).where(r.delivery_id == deliveries.c.id, r.type == kind)
        return (query.where(r.machine == false()) if human else query).exists()

    rows = await conn.execute(
        select(deliveries.c.id, *(probe(k, human) for k in kinds for human in (False, True))).where(
            deliveries.c.id.in_(delivery_ids)
        )
    )
    seen: set[tuple[int, str]] = set()
    seen_human: set[tuple[int, str]] = set()
    for delivery_id, *found in rows:
        for n, kind in enumerate(kinds):
            if found[2 * n]:
                seen.add((delivery_id, kind))
            if found[2 * n + 1]:
                seen_human.add((delivery_id, kind))
    return seen, seen_human


# The two executemany statements of a flush go to the driver as prebuilt tuples: SQLAlchemy's
# per-row bind processing (dicts → parameters, a processor per value) was most of a flush's
# CPU, and a flush writes thousands of rows a second (bench/README.md, web).
_EVENT_COLUMNS = (
    "tenant_id",
    "delivery_id",
    "message_id",
    "campaign_id",
    "recipient",
    "type",
    "occurred_at",
    "unique_first",
    "machine",
    "link_position",
    "url",
    "ip",
    "user_agent",
    "detail",
)


def _marks(paramstyle: str, n: int) -> str:
    return ", ".join(["?" if paramstyle == "qmark" else "%s"] * n)


def _sqlite_time(at: datetime | None) -> str | None:
    """SQLAlchemy's SQLite DateTime text ('YYYY-MM-DD HH:MM:SS.ffffff'); 10× strftime."""
    if at is None:
        return None
    text = at.isoformat(" ")
    return text if at.microsecond else text + ".000000"


def _driver_time(conn: AsyncConnection) -> Callable[[datetime | None], Any]:
    return _sqlite_time if conn.dialect.name == "sqlite" else lambda at: at


async def _insert_events(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    ts = _driver_time(conn)
    sql = (
        f"INSERT INTO recipient_events ({', '.join(_EVENT_COLUMNS)}) "
        f"VALUES ({_marks(conn.dialect.paramstyle, len(_EVENT_COLUMNS))})"
    )
    await conn.exec_driver_sql(
        sql,
        [
            (
                r["tenant_id"],
                r["delivery_id"],
                r["message_id"],
                r["campaign_id"],
                r["recipient"],
                r["type"],
                ts(r["occurred_at"]),
                int(r["unique_first"]),
                int(r["machine"]),
                r["link_position"],
                r["url"],
                r["ip"],
                r["user_agent"],
                json.dumps(r["detail"]),  # None → JSON null, as the JSON column stores it
            )
            for r in rows
        ],
    )


def _engagement_sql(paramstyle: str) -> str:
    m = "?" if paramstyle == "qmark" else "%s"
    return (
        f"UPDATE recipients SET open_count = open_count + {m}, click_count = click_count + {m},"
        f" last_open_at = COALESCE({m}, last_open_at), last_click_at = COALESCE({m}, last_click_at)"
        f" WHERE tenant_id = {m} AND email = {m}"
    )


def _hook(row: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    """A webhook payload of an event row (tenant, type, data)."""
    data = {
        "delivery_id": row["delivery_id"],
        "message_id": row["message_id"],
        "recipient": row["recipient"],
        "at": row["occurred_at"].isoformat() + "Z",
        "unique": row["unique_first"],
        "machine": row["machine"],
    }
    if row["url"]:
        data["url"] = row["url"]
    return row["tenant_id"], row["type"], data


def _row(e: TrackEvent, owner: DeliveryOwner, unique: bool) -> dict[str, Any]:
    return {
        "tenant_id": owner.tenant_id,
        "delivery_id": owner.id,
        "message_id": owner.message_id,
        "campaign_id": owner.campaign_id,
        "recipient": owner.recipient_key,
        "type": e.type,
        "occurred_at": e.occurred_at,
        "unique_first": unique,
        "machine": e.machine,
        "link_position": e.link_position,
        "url": e.url,
        "ip": e.ip,
        "user_agent": (e.user_agent or "")[:512] or None,
        "detail": {"implied_by": "click"} if e.implied else None,
    }


async def for_message(conn: AsyncConnection, message_id: int, limit: int = 500) -> list[Any]:
    return list(
        await conn.execute(
            select(recipient_events)
            .where(recipient_events.c.message_id == message_id)
            .order_by(recipient_events.c.occurred_at, recipient_events.c.id)
            .limit(limit)
        )
    )


async def record_unsubscribe(
    conn: AsyncConnection,
    owner: DeliveryOwner,
    at: datetime,
    ip: str | None,
    user_agent: str | None,
    expires_at: datetime | None = None,
) -> bool:
    """Suppress the delivery's recipient for its tenant (reason unsubscribe, until
    `expires_at`, None = forever) and, the first time only, record the event and count it.
    Returns True when this call unsubscribed the address; False when it already was."""
    await suppressions.add(
        conn,
        owner.tenant_id,
        owner.recipient_key,
        "unsubscribe",
        source=f"delivery:{owner.id}",
        expires_at=expires_at,
    )
    already = (
        await conn.execute(
            select(recipient_events.c.id)
            .where(
                recipient_events.c.delivery_id == owner.id,
                recipient_events.c.type == EventType.UNSUBSCRIBED.value,
            )
            .limit(1)
        )
    ).first()
    if already is not None:
        return False
    event = TrackEvent(EventType.UNSUBSCRIBED.value, owner.id, at, ip=ip, user_agent=user_agent)
    row = _row(event, owner, True)
    await conn.execute(recipient_events.insert().values(**row))
    await webhooks.enqueue_many(conn, [_hook(row)])
    await stats.bump(conn, owner.tenant_id, owner.campaign_id, "unsubscribed", at)
    return True
