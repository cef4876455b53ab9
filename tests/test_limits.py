"""Per-tenant sending limits: real queue (SQLite and MariaDB), real SMTP server on loopback."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from relay.config import AccountConfig, Config, DeliveryConfig, TenantLimitConfig
from relay.scheduler import Scheduler
from relay.store import limits
from relay.store.db import Database
from relay.store.limits import Limits
from relay.store.tables import deliveries, delivery_attempts
from relay.transport.pool import SmarthostPool
from tests import rows
from tests.peers import RecordingServer

T0 = datetime(2026, 3, 2, 10, 0, 30)  # half a minute into a minute


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _config(port: int, **tenant_limits: TenantLimitConfig) -> Config:
    account = AccountConfig(name="acct0", host="127.0.0.1", port=port, tls="none")
    delivery: dict[str, Any] = {
        "mode": "smarthost",
        "accounts": [account],
        "connect_timeout": 2.0,
        "tenant_limits": tenant_limits,
    }
    return Config(delivery=DeliveryConfig(**delivery))


async def _tenant_named(db: Database, name: str, clock: Clock, n: int) -> list[int]:
    tenant = await rows.tenant(db, name=name)
    msg = await rows.message(db, tenant)
    return [
        await rows.delivery(db, msg, f"{name}{i}@example.com", next_attempt_at=clock.now)
        for i in range(n)
    ]


async def _rows(db: Database, ids: list[int]) -> list[Any]:
    async with db.read() as conn:
        result = await conn.execute(
            select(deliveries).where(deliveries.c.id.in_(ids)).order_by(deliveries.c.id)
        )
        return list(result)


async def test_over_the_limit_waits_in_the_queue_without_an_attempt(db: Database) -> None:
    clock = Clock(T0)
    limited = await _tenant_named(db, "acme", clock, 5)
    free = await _tenant_named(db, "other", clock, 3)
    async with RecordingServer() as mx:
        config = _config(mx.port, acme=TenantLimitConfig(per_minute=3))
        pool = SmarthostPool(config.delivery, "relay.test", rng=random.Random(1))
        s = Scheduler(config, db, pool, clock=clock, owner="w1")
        await s.run_until_idle()
        assert len(mx.messages) == 3 + 3  # acme: 3 of 5; the other tenant is not limited
        found = await _rows(db, limited)
        waiting = [r for r in found if r.state != "delivered"]
        assert len(waiting) == 2
        assert all(r.state == "queued" and r.attempts == 0 for r in waiting)
        assert all(r.next_attempt_at > clock.now for r in waiting)
        assert all(r.state == "delivered" for r in await _rows(db, free))
        async with db.read() as conn:
            tried = await conn.scalar(
                select(func.count())
                .select_from(delivery_attempts)
                .where(delivery_attempts.c.delivery_id.in_([r.id for r in waiting]))
            )
        assert tried == 0

        clock.now += timedelta(minutes=2)  # the window has slid past the first three
        await s.run_until_idle()
        await pool.close()
    assert len(mx.messages) == 8
    assert all(r.state == "delivered" for r in await _rows(db, limited))


async def test_default_limit_applies_to_unlisted_tenants(db: Database) -> None:
    clock = Clock(T0)
    ids = await _tenant_named(db, "anyone", clock, 4)
    async with RecordingServer() as mx:
        config = _config(mx.port, **{"*": TenantLimitConfig(per_hour=1)})
        pool = SmarthostPool(config.delivery, "relay.test", rng=random.Random(1))
        await Scheduler(config, db, pool, clock=clock, owner="w1").run_until_idle()
        await pool.close()
    assert len(mx.messages) == 1
    found = await _rows(db, ids)
    waits = [(r.next_attempt_at - clock.now).total_seconds() for r in found if r.state == "queued"]
    assert waits == [3600.0] * 3  # 1 an hour: at most the window away


async def test_minute_window_slides(db: Database) -> None:
    lim = Limits(per_minute=3)
    assert (await limits.take(db, "tenant:1", 3, lim, T0)).granted == 3
    assert (await limits.take(db, "tenant:1", 1, lim, T0)).granted == 0
    # 15 s into the next minute: 75% of the previous minute's 3 still counts → none free.
    assert (await limits.take(db, "tenant:1", 1, lim, T0 + timedelta(seconds=45))).granted == 0
    # 45 s into it: 25% of 3 = 0.75 → one in use, two free.
    grant = await limits.take(db, "tenant:1", 3, lim, T0 + timedelta(seconds=75))
    assert grant.granted == 2 and grant.waits_s == (20.0,)


async def test_hour_and_day_windows(db: Database) -> None:
    lim = Limits(per_hour=4, per_day=6)
    assert (await limits.take(db, "tenant:2", 3, lim, T0)).granted == 3
    half = await limits.take(db, "tenant:2", 3, lim, T0 + timedelta(minutes=30))
    assert half.granted == 1 and len(half.waits_s) == 2
    # an hour later the first three have left the hour, but not the day (6 a day: 2 left)
    later = await limits.take(db, "tenant:2", 5, lim, T0 + timedelta(minutes=61))
    assert later.granted == 2
    assert later.waits_s[0] == 86400 / 6  # the day is what binds: spread at its rate
    tomorrow = await limits.take(db, "tenant:2", 5, lim, T0 + timedelta(days=1, minutes=31))
    assert tomorrow.granted == 4  # the hour binds again


async def test_two_nodes_never_exceed_a_shared_limit(db_url: str) -> None:
    from relay.config import DatabaseConfig

    nodes = [Database.from_config(DatabaseConfig(url=db_url)) for _ in range(2)]
    try:
        lim = Limits(per_minute=25)
        grants = await asyncio.gather(
            *(limits.take(nodes[i % 2], "tenant:9", 3, lim, T0) for i in range(20))
        )
    finally:
        for node in nodes:
            await node.dispose()
    assert sum(g.granted for g in grants) == 25
