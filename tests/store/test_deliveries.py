"""The queue: leasing, no double leases, release and lease recovery, on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select, update

from relay.store import deliveries as queue
from relay.store.db import Database, utcnow
from relay.store.tables import campaigns, deliveries
from tests import rows


async def _state(db: Database, delivery_id: int) -> tuple[str, str | None]:
    async with db.read() as conn:
        row = (
            await conn.execute(
                select(deliveries.c.state, deliveries.c.lease_owner).where(
                    deliveries.c.id == delivery_id
                )
            )
        ).one()
    return row.state, row.lease_owner


async def test_lease_claims_due_only_and_once(db: Database) -> None:
    tenant = await rows.tenant(db)
    msg = await rows.message(db, tenant)
    now = utcnow()
    due = [await rows.delivery(db, msg, f"r{i}@example.com") for i in range(3)]
    later = await rows.delivery(
        db, msg, "later@example.com", next_attempt_at=now + timedelta(hours=1)
    )
    held = await rows.delivery(db, msg, "held@example.com", state="held")

    leased = await queue.lease_due(db, "w1", 10, utcnow(), 300)
    assert sorted(d.id for d in leased) == due
    assert leased[0].mail_from == "news@shop.example"
    assert await _state(db, due[0]) == ("sending", "w1")
    assert await queue.lease_due(db, "w2", 10, utcnow(), 300) == []
    assert await _state(db, later) == ("queued", None)
    assert await _state(db, held) == ("held", None)


async def test_paused_campaign_is_not_leased(db: Database) -> None:
    tenant = await rows.tenant(db)
    async with db.write() as conn:
        result = await conn.execute(
            campaigns.insert().values(
                tenant_id=tenant, name="c", state="paused", settings={}, created_at=utcnow()
            )
        )
    campaign_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    msg = await rows.message(db, tenant, campaign_id=campaign_id)
    await rows.delivery(db, msg)
    assert await queue.lease_due(db, "w1", 10, utcnow(), 300) == []
    async with db.write() as conn:
        await conn.execute(update(campaigns).values(state="active"))
    assert len(await queue.lease_due(db, "w1", 10, utcnow(), 300)) == 1


async def test_concurrent_leasers_never_share(db: Database) -> None:
    tenant = await rows.tenant(db)
    msg = await rows.message(db, tenant)
    ids = {await rows.delivery(db, msg, f"r{i}@example.com") for i in range(60)}
    now = utcnow() + timedelta(seconds=1)

    async def claim(owner: str) -> list[int]:
        got: list[int] = []
        while batch := await queue.lease_due(db, owner, 7, now, 300):
            got += [d.id for d in batch]
        return got

    results = await asyncio.gather(*(claim(f"w{i}") for i in range(4)))
    flat = [i for r in results for i in r]
    assert len(flat) == len(set(flat)) == 60
    assert set(flat) == ids


async def test_release_and_recover_expired(db: Database) -> None:
    tenant = await rows.tenant(db)
    msg = await rows.message(db, tenant)
    a = await rows.delivery(db, msg, "a@example.com")
    b = await rows.delivery(db, msg, "b@example.com", attempts=2)
    now = utcnow() + timedelta(seconds=1)
    await queue.lease_due(db, "w1", 10, now, 60)

    assert await queue.release(db, "someone-else", [a], now) == 0
    assert await queue.release(db, "w1", [a], now) == 1
    assert await _state(db, a) == ("queued", None)

    assert await queue.recover_expired(db, now + timedelta(seconds=30)) == 0
    assert await queue.recover_expired(db, now + timedelta(seconds=61)) == 1
    assert await _state(db, b) == ("deferred", None)  # tried before: back as deferred
    raw = await queue.load_raw(db, [msg])
    assert raw[msg].startswith(b"From: Shop")
