"""Queries behind the operator's queue tools: list, show, retry, delete, history.

In the spirit of mailq / postqueue / postsuper: read the queue without leasing anything, make
deferred or failed deliveries due now, cancel what should not go out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.errors import NotFound
from relay.model import FINAL_STATES, DeliveryState
from relay.store.db import Database, utcnow
from relay.store.deliveries import unheld
from relay.store.tables import (
    campaigns,
    deliveries,
    delivery_attempts,
    messages,
    smtp_credentials,
    tenants,
)

RETRYABLE = (DeliveryState.DEFERRED, DeliveryState.FAILED, DeliveryState.QUEUED)
# Also requeued by a one-off resend that bypasses the suppression list.
RESENDABLE = (DeliveryState.SUPPRESSED, DeliveryState.BOUNCED)
# Deliveries a `queue delete` may cancel: everything not final and not in a worker's hands.
CANCELLABLE = (DeliveryState.QUEUED, DeliveryState.DEFERRED, DeliveryState.HELD)


@dataclass(frozen=True, slots=True)
class QueueFilter:
    state: str | None = None
    domain: str | None = None
    campaign: str | None = None
    tenant: str | None = None
    email: str | None = None
    limit: int = 100


def _delivery_columns() -> list[Any]:
    return [
        deliveries.c.id,
        deliveries.c.message_id,
        tenants.c.name.label("tenant"),
        campaigns.c.name.label("campaign"),
        deliveries.c.recipient,
        deliveries.c.rcpt_type,
        deliveries.c.state,
        deliveries.c.attempts,
        deliveries.c.next_attempt_at,
        deliveries.c.last_reply,
        deliveries.c.created_at,
        deliveries.c.updated_at,
    ]


def _deliveries_query() -> Any:
    """Deliveries with their tenant's and campaign's names."""
    return (
        select(*_delivery_columns())
        .join(tenants, tenants.c.id == deliveries.c.tenant_id)
        .outerjoin(campaigns, campaigns.c.id == deliveries.c.campaign_id)
    )


async def list_deliveries(db: Database, f: QueueFilter) -> list[dict[str, Any]]:
    query = _deliveries_query()
    if f.state:
        query = query.where(deliveries.c.state == f.state)
    else:  # like mailq: what is still in the queue
        query = query.where(deliveries.c.state.not_in([s.value for s in FINAL_STATES]))
    if f.domain:
        query = query.where(deliveries.c.domain == f.domain.lower())
    if f.campaign:
        query = query.where(campaigns.c.name == f.campaign)
    if f.tenant:
        query = query.where(tenants.c.name == f.tenant)
    if f.email:
        query = query.where(deliveries.c.recipient_key == f.email.lower())
    query = query.order_by(deliveries.c.id).limit(f.limit)
    async with db.read() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]


async def history(db: Database, f: QueueFilter) -> list[dict[str, Any]]:
    """Every delivery (final or not) for a campaign or an address, oldest first."""
    query = _deliveries_query()
    if f.campaign:
        query = query.where(campaigns.c.name == f.campaign)
    if f.email:
        query = query.where(deliveries.c.recipient_key == f.email.strip().lower())
    if f.tenant:
        query = query.where(tenants.c.name == f.tenant)
    query = query.order_by(deliveries.c.created_at, deliveries.c.id).limit(f.limit)
    async with db.read() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]


async def show_message(db: Database, message_id: int) -> dict[str, Any]:
    """A message with its deliveries and every attempt of each."""
    async with db.read() as conn:
        msg = (
            await conn.execute(
                select(
                    messages.c.id,
                    tenants.c.name.label("tenant"),
                    campaigns.c.name.label("campaign"),
                    messages.c.message_id_header,
                    messages.c.mail_from,
                    messages.c.from_header,
                    messages.c.subject,
                    messages.c.size,
                    messages.c.received_at,
                    messages.c.pruned_at,
                )
                .join(tenants, tenants.c.id == messages.c.tenant_id)
                .outerjoin(campaigns, campaigns.c.id == messages.c.campaign_id)
                .where(messages.c.id == message_id)
            )
        ).first()
        if msg is None:
            raise NotFound(f"no message with id {message_id} (see `relay queue list`)")
        rows = await conn.execute(
            _deliveries_query()
            .where(deliveries.c.message_id == message_id)
            .order_by(deliveries.c.id)
        )
        found = [dict(r._mapping) for r in rows]
        attempts = await conn.execute(
            select(delivery_attempts)
            .join(deliveries, deliveries.c.id == delivery_attempts.c.delivery_id)
            .where(deliveries.c.message_id == message_id)
            .order_by(delivery_attempts.c.started_at)
        )
        by_delivery: dict[int, list[dict[str, Any]]] = {}
        for a in attempts:
            by_delivery.setdefault(a.delivery_id, []).append(dict(a._mapping))
    for d in found:
        d["attempt_log"] = by_delivery.get(d["id"], [])
    return {**dict(msg._mapping), "deliveries": found}


async def retry(
    db: Database,
    message_id: int | None = None,
    all_deferred: bool = False,
    *,
    no_suppression: bool = False,
    recipients: Sequence[str] = (),
) -> int:
    """Make deferred/failed (and queued) deliveries due now; returns how many.

    `no_suppression` (a one-off resend of one message): also `suppressed` and `bounced`
    deliveries, and each requeued row keeps the override, so the scheduler's pre-send check
    lets it through on whichever node leases it. `recipients` (address keys) narrows to them.
    """
    now = utcnow()
    condition: Any
    states = [*RETRYABLE, *(RESENDABLE if no_suppression else ())]
    if all_deferred:
        if no_suppression or recipients:
            raise ValueError("--no-suppression and --recipient need a message id")
        condition = deliveries.c.state == DeliveryState.DEFERRED.value
    elif message_id is not None:
        condition = and_(
            deliveries.c.message_id == message_id,
            deliveries.c.state.in_([s.value for s in states]),
        )
        if recipients:
            condition = and_(condition, deliveries.c.recipient_key.in_(sorted(set(recipients))))
    else:
        raise ValueError("retry needs a message id or all_deferred")
    values: dict[str, Any] = {
        "state": DeliveryState.QUEUED.value,
        "next_attempt_at": now,
        "updated_at": now,
        "final_at": None,
    }
    if no_suppression:
        values.update(no_suppression=True, bounce_kind=None, bounce_reason=None)
    async with db.write() as conn:
        if message_id is not None:
            await _require_message(conn, message_id)
        result = await conn.execute(
            update(deliveries).where(condition, deliveries.c.lease_owner.is_(None)).values(**values)
        )
    return int(result.rowcount)


async def _require_message(conn: AsyncConnection, message_id: int) -> None:
    found = (await conn.execute(select(messages.c.id).where(messages.c.id == message_id))).first()
    if found is None:
        raise NotFound(f"no message with id {message_id} (see `relay queue list`)")


async def release_held(
    db: Database,
    message_id: int | None = None,
    tenant: str | None = None,
    credential: str | None = None,
) -> int:
    """Send held deliveries (tenant or credential on hold): `held` → `queued` (`deferred` if
    tried before), due when they were due anyway (`X-Relay-Send-At`, a retry's backoff) or now.

    One message, or in bulk every held delivery of a tenant and/or of one SMTP login.
    Deliveries held because their campaign is paused stay held (resume the campaign).
    """
    if message_id is None and tenant is None and credential is None:
        raise ValueError("release needs a message id, a tenant or a credential")
    conditions: list[Any] = [deliveries.c.state == DeliveryState.HELD.value]
    async with db.write() as conn:
        if message_id is not None:
            await _require_message(conn, message_id)
            conditions.append(deliveries.c.message_id == message_id)
        if tenant is not None:
            row = (await conn.execute(select(tenants.c.id).where(tenants.c.name == tenant))).first()
            if row is None:
                raise NotFound(f"no tenant named {tenant!r} (see `relay tenants list`)")
            conditions.append(deliveries.c.tenant_id == row.id)
        if credential is not None:
            login = smtp_credentials.c.username == credential
            row = (await conn.execute(select(smtp_credentials.c.id).where(login))).first()
            if row is None:
                raise NotFound(f"no credential {credential!r} (see `relay credentials list`)")
            sent_by = select(messages.c.id).where(messages.c.credential_id == row.id)
            conditions.append(deliveries.c.message_id.in_(sent_by))
        paused = select(campaigns.c.id).where(campaigns.c.state == "paused")
        conditions.append(
            deliveries.c.campaign_id.is_(None) | deliveries.c.campaign_id.not_in(paused)
        )
        result = await conn.execute(
            update(deliveries).where(*conditions).values(**unheld(utcnow()))
        )
    return int(result.rowcount)


async def cancel_message(db: Database, message_id: int) -> tuple[int, int]:
    """Cancel a message's unsent deliveries. Returns (cancelled, in_flight_left_alone)."""
    now = utcnow()
    async with db.write() as conn:
        exists = (
            await conn.execute(select(messages.c.id).where(messages.c.id == message_id))
        ).first()
        if exists is None:
            raise NotFound(f"no message with id {message_id} (see `relay queue list`)")
        result = await conn.execute(
            update(deliveries)
            .where(
                deliveries.c.message_id == message_id,
                deliveries.c.state.in_([s.value for s in CANCELLABLE]),
                deliveries.c.lease_owner.is_(None),
            )
            .values(state=DeliveryState.CANCELLED.value, updated_at=now, final_at=now)
        )
        busy = (
            await conn.execute(
                select(deliveries.c.id).where(
                    deliveries.c.message_id == message_id,
                    deliveries.c.state.not_in([s.value for s in FINAL_STATES]),
                )
            )
        ).all()
    return int(result.rowcount), len(busy)
