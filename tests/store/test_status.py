"""`relay status` numbers from real rows on both databases."""

from __future__ import annotations

from datetime import timedelta

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
        for kind in ("delivered", "delivered", "delivered", "bounced"):
            await conn.execute(
                recipient_events.insert().values(
                    tenant_id=tenant, recipient="r@x.example", type=kind, occurred_at=now
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
