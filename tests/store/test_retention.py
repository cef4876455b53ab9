"""Retention prunes old finished bodies and old events, never a message still being sent."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from relay.store import suppressions
from relay.store.db import Database, utcnow
from relay.store.retention import prune
from relay.store.tables import messages, recipient_events
from relay.store.tables import suppressions as suppressions_table
from tests import rows


async def test_prune(db: Database) -> None:
    tenant = await rows.tenant(db)
    old = utcnow() - timedelta(days=40)
    done = await rows.message(db, tenant, received_at=old)
    await rows.delivery(db, done, state="delivered")
    pending = await rows.message(db, tenant, received_at=old)
    await rows.delivery(db, pending, "a@x.example", state="delivered")
    await rows.delivery(db, pending, "b@x.example", state="deferred")
    fresh = await rows.message(db, tenant)
    await rows.delivery(db, fresh, state="delivered")
    async with db.write() as conn:
        for days in (400, 400, 10):
            await conn.execute(
                recipient_events.insert().values(
                    tenant_id=tenant,
                    recipient="r@x.example",
                    type="opened",
                    occurred_at=utcnow() - timedelta(days=days),
                )
            )
        await suppressions.add(
            conn, tenant, "gone@x.example", "hard_bounce", expires_at=utcnow() - timedelta(days=1)
        )
        await suppressions.add(conn, tenant, "kept@x.example", "complaint")
    seen: list[tuple[str, int]] = []
    result = await prune(db, 30, 365, batch=1, progress=lambda k, n: seen.append((k, n)))
    assert (result.bodies, result.events, result.suppressions) == (1, 2, 1)
    assert seen == [("bodies", 1), ("events", 1), ("events", 1)]
    async with db.read() as conn:
        raws = dict((await conn.execute(select(messages.c.id, messages.c.raw))).all())
        left = (await conn.execute(select(func.count()).select_from(recipient_events))).scalar()
        kept = (await conn.execute(select(suppressions_table.c.email))).scalars().all()
    assert raws[done] is None and raws[pending] is not None and raws[fresh] is not None
    assert left == 1 and kept == ["kept@x.example"]
    again = await prune(db, 30, 365)
    assert (again.bodies, again.events, again.suppressions) == (0, 0, 0)
