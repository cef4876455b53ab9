"""Campaigns: listing, lookup by name, and pause / resume / cancel of their deliveries.

Pause: state paused, its queued/deferred deliveries → held. Resume: its held deliveries →
queued, or deferred if tried before, each due when it was due before the pause (a scheduled
send time or a retry's backoff is kept) or now. Cancel: every delivery not yet sent (queued,
deferred, held) → cancelled. A delivery being sent right now (leased) finishes; the
scheduler never leases held ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.errors import NotFound
from relay.model import CampaignState, DeliveryState
from relay.store.db import utcnow
from relay.store.deliveries import unheld
from relay.store.tables import (
    campaigns,
    deliveries,
    messages,
    recipient_events,
    smtp_credentials,
    tenants,
)


@dataclass(frozen=True, slots=True)
class Campaign:
    id: int
    tenant_id: int
    name: str
    state: str
    created_at: datetime


def _campaign(row: Any) -> Campaign:
    return Campaign(row.id, row.tenant_id, row.name, row.state, row.created_at)


async def list_page(
    conn: AsyncConnection, tenant_id: int | None, after_id: int, limit: int
) -> list[Campaign]:
    query = select(campaigns).where(campaigns.c.id > after_id).order_by(campaigns.c.id).limit(limit)
    if tenant_id is not None:
        query = query.where(campaigns.c.tenant_id == tenant_id)
    return [_campaign(r) for r in await conn.execute(query)]


async def find(conn: AsyncConnection, tenant_id: int | None, name: str) -> list[Campaign]:
    """Campaigns with this name: one per tenant at most (several only for tenant None)."""
    query = select(campaigns).where(campaigns.c.name == name).order_by(campaigns.c.id)
    if tenant_id is not None:
        query = query.where(campaigns.c.tenant_id == tenant_id)
    return [_campaign(r) for r in await conn.execute(query)]


async def get(conn: AsyncConnection, tenant_id: int, name: str) -> Campaign:
    found = await find(conn, tenant_id, name)
    if not found:
        raise NotFound(f"no campaign named {name!r}")
    return found[0]


async def _move(
    conn: AsyncConnection,
    campaign_id: int,
    from_states: tuple[str, ...],
    to_state: str,
    **extra: Any,
) -> int:
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.campaign_id == campaign_id, deliveries.c.state.in_(from_states))
        .values(state=to_state, updated_at=utcnow(), **extra)
    )
    return int(result.rowcount)


async def _set_state(conn: AsyncConnection, campaign_id: int, state: str) -> None:
    await conn.execute(update(campaigns).where(campaigns.c.id == campaign_id).values(state=state))


async def pause(conn: AsyncConnection, campaign: Campaign) -> int:
    """Hold the campaign's waiting deliveries; returns how many were held."""
    if campaign.state == CampaignState.CANCELLED:
        return 0
    await _set_state(conn, campaign.id, CampaignState.PAUSED)
    due = (DeliveryState.QUEUED.value, DeliveryState.DEFERRED.value)
    return await _move(conn, campaign.id, due, DeliveryState.HELD.value)


async def resume(conn: AsyncConnection, campaign: Campaign) -> int:
    """Queue the campaign's held deliveries again (see `deliveries.unheld`); returns how many.

    Mail of a tenant or SMTP login that is on hold stays held: resuming the campaign must not
    send staging mail (`relay queue release` does that)."""
    if campaign.state == CampaignState.CANCELLED:
        return 0
    await _set_state(conn, campaign.id, CampaignState.ACTIVE)
    held_tenants = select(tenants.c.id).where(tenants.c.hold.is_(True))
    held_logins = select(smtp_credentials.c.id).where(smtp_credentials.c.hold.is_(True))
    held_messages = select(messages.c.id).where(messages.c.credential_id.in_(held_logins))
    result = await conn.execute(
        update(deliveries)
        .where(
            deliveries.c.campaign_id == campaign.id,
            deliveries.c.state == DeliveryState.HELD.value,
            deliveries.c.tenant_id.not_in(held_tenants),
            deliveries.c.message_id.not_in(held_messages),
        )
        .values(**unheld(utcnow()))
    )
    return int(result.rowcount)


async def cancel(conn: AsyncConnection, campaign: Campaign) -> int:
    """Cancel every unsent delivery of the campaign; returns how many."""
    await _set_state(conn, campaign.id, CampaignState.CANCELLED)
    unsent = (DeliveryState.QUEUED.value, DeliveryState.DEFERRED.value, DeliveryState.HELD.value)
    return await _move(conn, campaign.id, unsent, DeliveryState.CANCELLED.value, final_at=utcnow())


async def link_clicks(conn: AsyncConnection, campaign_id: int) -> list[dict[str, Any]]:
    """Clicks per URL (total, first per delivery, human), most clicked first. Uses the
    (campaign_id, occurred_at) index: only this campaign's events are read."""
    e = recipient_events.c
    rows = await conn.execute(
        select(
            e.url,
            func.count(),
            func.sum(case((e.unique_first, 1), else_=0).cast(Integer)),
            func.sum(case((e.machine, 0), else_=1).cast(Integer)),
        )
        .where(e.campaign_id == campaign_id, e.type == "clicked")
        .group_by(e.url)
        .order_by(func.count().desc(), e.url)
    )
    return [
        {"url": url, "clicks": int(total), "unique": int(uniq or 0), "human": int(human or 0)}
        for url, total, uniq, human in rows
    ]
