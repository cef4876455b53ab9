"""Database effects of inbound reports (asynchronous DSNs and ARF complaints).

Input: a matched delivery and one classified per-recipient result. Output, in the caller's
transaction: the delivery's state and bounce fields, the recipient's counters, an event
row, the stats counter and webhook event (`bounced`, `failed`, `deferred`, `complained`, as
`relay/outcome.py` does for replies during delivery), and a suppression when the address is
bad or complained. Soft failures escalate to a `soft_bounce` suppression after `limit`
distinct deliveries within `window_s` (the sender's own trouble never counts); a policy
block, or a hard bounce, reported after the fact is charged to the pool account that sent it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.model import BounceKind, DeliveryState, EventType, SuppressionReason
from relay.store import stats, suppressions, webhooks
from relay.store.accounts import record_use
from relay.store.db import utcnow
from relay.store.tables import (
    accounts,
    deliveries,
    inbound_reports,
    messages,
    recipient_events,
    recipients,
)


@dataclass(frozen=True, slots=True)
class MatchedDelivery:
    id: int
    tenant_id: int
    message_id: int
    campaign_id: int | None
    recipient_key: str
    state: str
    account: str | None = None  # the pool account (or MX host) that took it


_COLUMNS = (
    deliveries.c.id,
    deliveries.c.tenant_id,
    deliveries.c.message_id,
    deliveries.c.campaign_id,
    deliveries.c.recipient_key,
    deliveries.c.state,
    deliveries.c.account,
)


def _matched(row: Any) -> MatchedDelivery:
    return MatchedDelivery(
        row.id,
        row.tenant_id,
        row.message_id,
        row.campaign_id,
        row.recipient_key,
        row.state,
        row.account,
    )


async def delivery_by_id(conn: AsyncConnection, delivery_id: int) -> MatchedDelivery | None:
    row = (await conn.execute(select(*_COLUMNS).where(deliveries.c.id == delivery_id))).first()
    return _matched(row) if row else None


async def delivery_by_message_id(
    conn: AsyncConnection, message_id_header: str, recipient_key: str
) -> MatchedDelivery | None:
    """The newest delivery of the message with this Message-ID header to this recipient."""
    if not message_id_header or not recipient_key:
        return None
    row = (
        await conn.execute(
            select(*_COLUMNS)
            .join(messages, messages.c.id == deliveries.c.message_id)
            .where(
                messages.c.message_id_header == message_id_header,
                deliveries.c.recipient_key == recipient_key,
            )
            .order_by(deliveries.c.id.desc())
            .limit(1)
        )
    ).first()
    return _matched(row) if row else None


@dataclass(frozen=True, slots=True)
class Effect:
    state: str  # the delivery's state afterwards
    suppressed: str | None  # the suppression reason added, if any


async def apply_report(
    conn: AsyncConnection,
    d: MatchedDelivery,
    *,
    kind: BounceKind,
    reason: str,
    status: str,
    diagnostic: str,
    action: str,
    ttl_s: dict[str, float],
    soft_limit: int,
    soft_window_s: float,
    now: datetime | None = None,
    policy_reasons: Collection[str] = (),
    sender_reasons: Collection[str] = (),
) -> Effect:
    """Apply one classified report result to its delivery. `ttl_s` maps reason → lifetime;
    `policy_reasons` (a block aimed at the sender) charge the sending account instead of the
    address; `sender_reasons` never count toward the soft-bounce escalation."""
    now = now or utcnow()
    detail = {
        "kind": str(kind),
        "reason": reason,
        "status": status,
        "diagnostic": diagnostic[:1000],
        "source": "report",
    }
    if kind == BounceKind.NOT_BOUNCE:
        return Effect(d.state, None)
    if kind == BounceKind.COMPLAINT:
        await _event(conn, d, EventType.COMPLAINED, detail, now)
        await _count(conn, d, recipients.c.complaint_count, now)
        await _suppress(conn, d, SuppressionReason.COMPLAINT, ttl_s, now)
        await _notify(conn, d, "complained", "complained", detail, now)
        return Effect(d.state, SuppressionReason.COMPLAINT)
    if kind == BounceKind.HARD:
        state, event, metric = DeliveryState.BOUNCED, EventType.BOUNCED, "bounced_hard"
    elif action == "delayed":
        state, event, metric = DeliveryState(d.state), EventType.DEFERRED, "deferred"
    else:
        state, event, metric = DeliveryState.FAILED, EventType.FAILED, "bounced_soft"
    values: dict[str, Any] = {
        "state": state,
        "bounce_kind": str(kind),
        "bounce_reason": reason[:32],
        "last_reply": diagnostic[:4000],
        "updated_at": now,
    }
    if state.is_final:
        values["final_at"] = func.coalesce(deliveries.c.final_at, now)
    await conn.execute(update(deliveries).where(deliveries.c.id == d.id).values(**values))
    await _event(conn, d, event, detail, now)
    await _notify(conn, d, metric, str(event), detail, now)
    if kind == BounceKind.HARD:
        await _count(conn, d, recipients.c.hard_bounce_count, now)
        await charge_account(conn, d.account, now)  # the hard-bounce rate of the account
        await _suppress(conn, d, SuppressionReason.HARD_BOUNCE, ttl_s, now)
        return Effect(state, SuppressionReason.HARD_BOUNCE)
    await _count(conn, d, recipients.c.soft_bounce_count, now)
    if policy_reasons and reason in policy_reasons and action != "delayed":
        await charge_account(conn, d.account, now)  # the sender's reputation, not the address
    failed = state is DeliveryState.FAILED and action != "delayed"
    if soft_limit and failed and reason not in sender_reasons:
        since = now - timedelta(seconds=soft_window_s)
        if await soft_failures(conn, d.tenant_id, d.recipient_key, since, sender_reasons) >= (
            soft_limit
        ):
            await _suppress(conn, d, SuppressionReason.SOFT_BOUNCE, ttl_s, now)
            return Effect(state, SuppressionReason.SOFT_BOUNCE)
    return Effect(state, None)


async def charge_account(conn: AsyncConnection, account: str | None, now: datetime) -> None:
    """Count a bounce reported after the fact (a DSN) against the pool account that sent the
    message (its send was counted already); MX hosts of direct delivery are not accounts."""
    if not account:
        return
    known = await conn.execute(select(accounts.c.name).where(accounts.c.name == account))
    if known.first() is not None:
        await record_use(conn, account, now, sent=0, bounced=1)


async def _notify(
    conn: AsyncConnection,
    d: MatchedDelivery,
    metric: str,
    webhook_event: str,
    detail: dict[str, str],
    now: datetime,
) -> None:
    """The stats counter and the webhook event, in the same transaction as the state."""
    await stats.bump(conn, d.tenant_id, d.campaign_id, metric, now)
    await webhooks.enqueue(
        conn,
        d.tenant_id,
        webhook_event,
        {
            "delivery_id": d.id,
            "message_id": d.message_id,
            "recipient": d.recipient_key,
            "code": None,
            "enhanced": detail["status"] or None,
            "text": detail["diagnostic"][:500],
            "kind": detail["kind"],
            "reason": detail["reason"],
            "source": "report",
        },
        at=now,
    )


async def _event(
    conn: AsyncConnection,
    d: MatchedDelivery,
    type_: EventType,
    detail: dict[str, str],
    now: datetime,
) -> None:
    await conn.execute(
        recipient_events.insert().values(
            tenant_id=d.tenant_id,
            delivery_id=d.id,
            message_id=d.message_id,
            campaign_id=d.campaign_id,
            recipient=d.recipient_key,
            type=str(type_),
            occurred_at=now,
            detail=detail,
        )
    )


async def _count(conn: AsyncConnection, d: MatchedDelivery, column: Any, now: datetime) -> None:
    where = (recipients.c.tenant_id == d.tenant_id, recipients.c.email == d.recipient_key)
    result = await conn.execute(
        update(recipients).where(*where).values({column: column + 1, "last_bounce_at": now})
    )
    if result.rowcount == 0:
        await conn.execute(
            recipients.insert().values(
                {
                    "tenant_id": d.tenant_id,
                    "email": d.recipient_key,
                    "status": "active",
                    "first_seen_at": now,
                    "last_seen_at": now,
                    column.name: 1,
                    "last_bounce_at": now,
                }
            )
        )


async def soft_failures(
    conn: AsyncConnection,
    tenant_id: int,
    key: str,
    since: datetime,
    ignore: Collection[str] = (),
) -> int:
    """How many distinct deliveries to this address failed soft since then (reports and
    delivery alike), not counting reasons in `ignore` (the sender's trouble, not theirs).
    Deferrals are not failures: a delivery retried ten times counts once, when it fails."""
    rows = await conn.execute(
        select(recipient_events.c.delivery_id, recipient_events.c.detail).where(
            recipient_events.c.tenant_id == tenant_id,
            recipient_events.c.recipient == key,
            recipient_events.c.type == str(EventType.FAILED),
            recipient_events.c.occurred_at >= since,
        )
    )
    counted = set()
    for delivery_id, detail in rows:
        detail = detail or {}
        reason = detail.get("cause") or detail.get("reason") or ""
        if detail.get("kind") == str(BounceKind.SOFT) and reason not in ignore:
            counted.add(delivery_id)
    return len(counted)


async def _suppress(
    conn: AsyncConnection,
    d: MatchedDelivery,
    reason: SuppressionReason,
    ttl_s: dict[str, float],
    now: datetime,
) -> None:
    await suppressions.add(
        conn,
        d.tenant_id,
        d.recipient_key,
        str(reason),
        f"report:delivery:{d.id}",
        suppressions.expiry(ttl_s.get(str(reason), 0.0), now),
    )


async def store_inbound(
    conn: AsyncConnection, rcpt: str, mail_from: str, raw: bytes, now: datetime | None = None
) -> int:
    """Keep a message sent to the bounce domain, before it is processed; returns its id."""
    result = await conn.execute(
        inbound_reports.insert().values(
            received_at=now or utcnow(),
            rcpt=rcpt[:320],
            mail_from=mail_from[:320],
            matched=False,
            raw=raw,
        )  # fmt: skip
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


async def mark_inbound(
    conn: AsyncConnection, report_id: int, matched: bool, kind: str, detail: dict[str, Any]
) -> None:
    """Record that a stored report was processed (its `kind` is no longer NULL)."""
    await conn.execute(
        inbound_reports.update()
        .where(inbound_reports.c.id == report_id)
        .values(matched=matched, kind=kind[:16], detail=detail)
    )


@dataclass(frozen=True, slots=True)
class StoredReport:
    id: int
    rcpt: str
    mail_from: str
    raw: bytes


async def unprocessed_inbound(
    conn: AsyncConnection, limit: int = 100, report_id: int | None = None
) -> list[StoredReport]:
    """Stored reports whose processing never finished (kind NULL), oldest first; or one by id."""
    query = select(
        inbound_reports.c.id, inbound_reports.c.rcpt, inbound_reports.c.mail_from,
        inbound_reports.c.raw,
    )  # fmt: skip
    if report_id is not None:
        query = query.where(inbound_reports.c.id == report_id)
    else:
        query = query.where(inbound_reports.c.kind.is_(None))
    rows = await conn.execute(query.order_by(inbound_reports.c.id).limit(limit))
    return [StoredReport(r.id, r.rcpt, r.mail_from, bytes(r.raw or b"")) for r in rows]


async def list_inbound(
    conn: AsyncConnection, *, unmatched: bool = False, limit: int = 100, before_id: int = 0
) -> list[dict[str, Any]]:
    """Stored reports, newest first (without the raw message); `unmatched`: those processed
    that matched no delivery, and those never processed (kind NULL)."""
    query = select(
        inbound_reports.c.id,
        inbound_reports.c.received_at,
        inbound_reports.c.rcpt,
        inbound_reports.c.mail_from,
        inbound_reports.c.matched,
        inbound_reports.c.kind,
        inbound_reports.c.detail,
    )
    if unmatched:
        query = query.where(inbound_reports.c.matched.is_(False))
    if before_id:
        query = query.where(inbound_reports.c.id < before_id)
    rows = await conn.execute(query.order_by(inbound_reports.c.id.desc()).limit(limit))
    return [
        {
            **{k: v for k, v in r._mapping.items() if k != "detail"},
            "matched": bool(r.matched),
            "type": (r.detail or {}).get("type"),
            "unmatched": (r.detail or {}).get("unmatched", []),
        }
        for r in rows
    ]
