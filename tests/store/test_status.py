"""`relay status` numbers from real rows on both databases."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from relay.cli.status import _age
from relay.store import status, suppressions
from relay.store.db import Database, utcnow
from relay.store.tables import recipient_events
from tests import rows


async def test_gather(db: Database) -> None:
    tenant = await rows.tenant(db)
    msg = await rows.message(db, tenant)
    await rows.delivery(db, msg, "a@x.example", created_at=utcnow() - timedelta(minutes=10))
    await rows.delivery(db, msg, "b@x.example", state="deferred")
    await rows.delivery(db, msg, "c@x.example", state="delivered")
    now = utcnow()
    async with db.write() as conn:
        # Older than an hour, before and after (a late write) the recent ones: not counted.
        for kind, at in [("delivered", now - timedelta(hours=2))] * 30 + [
            ("failed", now - timedelta(minutes=61))
        ]:
            await conn.execute(
                recipient_events.insert().values(
                    tenant_id=tenant, recipient="r@x.example", type=kind, occurred_at=at
                )
            )
        for kind in ("delivered", "delivered", "delivered", "bounced"):
            await conn.execute(
                recipient_events.insert().values(
                    tenant_id=tenant, recipient="r@x.example", type=kind, occurred_at=now
                )
            )
        await conn.execute(
            recipient_events.insert().values(
                tenant_id=tenant,
                recipient="r@x.example",
                type="failed",
                occurred_at=now - timedelta(hours=3),
            )
        )
        await suppressions.add(conn, tenant, "b@x.example", "hard_bounce")
    report = await status.gather(db)
    assert report["database"]["current"]
    assert report["queue"]["by_state"] == {"deferred": 1, "delivered": 1, "queued": 1}
    assert report["queue"]["in_queue"] == 2
    assert 590 <= report["queue"]["oldest_queued_age_s"] <= 700
    assert report["last_hour"] == {"bounced": 1, "delivered": 3}
    assert report["rates_last_hour"]["bounce"] == 0.25
    assert report["suppressions"] == {"hard_bounce": 1}


def test_age_format() -> None:
    assert [_age(s) for s in (None, 5, 65, 3725, 90000)] == ["-", "5s", "1m05s", "1h02m", "1d01h"]


async def test_last_hour_boundary_is_bisected_over_ids(db: Database) -> None:
    tenant = await rows.tenant(db)
    now = utcnow()
    async with db.write() as conn:
        for minutes in range(300, -1, -1):  # one event a minute for five hours, in id order
            await conn.execute(
                recipient_events.insert().values(
                    tenant_id=tenant,
                    recipient="r@x.example",
                    type="delivered",
                    occurred_at=now - timedelta(minutes=minutes, seconds=30),
                )
            )
    async with db.read() as conn:
        first = await status.first_event_id(conn, now - timedelta(hours=1))
        ids = [r.id for r in await conn.execute(select(recipient_events.c.id).order_by("id"))]
        later = await status.first_event_id(conn, now + timedelta(minutes=1))
    assert first == ids[-60]  # the 60 events of the last hour are the last 60 ids
    assert later == ids[-1] + 1  # nothing that recent: past the last id
    assert (await status.gather(db))["last_hour"] == {"delivered": 60}
