"""Pool accounts: per-minute rate and the hard-bounce-rate pause, counted in the database."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from relay.config import AccountConfig, Config, DeliveryConfig
from relay.scheduler import Scheduler
from relay.store import accounts
from relay.store.db import Database
from relay.store.tables import deliveries
from relay.transport.pool import SmarthostPool
from tests import rows
from tests.peers import RecordingServer

T0 = datetime(2026, 3, 2, 10, 0, 0)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _scheduler(db: Database, port: int, clock: Clock, **delivery: Any) -> Scheduler:
    per_minute = delivery.pop("per_minute", 0)
    account = AccountConfig(
        name="acct0", host="127.0.0.1", port=port, tls="none", per_minute=per_minute
    )
    config = Config(
        delivery=DeliveryConfig(
            mode="smarthost", accounts=[account], connect_timeout=2.0, workers=1, **delivery
        )
    )
    pool = SmarthostPool(config.delivery, "relay.test", rng=random.Random(1), wall=clock)
    return Scheduler(config, db, pool, clock=clock, owner="w1")


async def _queue(db: Database, clock: Clock, *recipients: str) -> None:
    msg = await rows.message(db, await rows.tenant(db))
    for r in recipients:
        await rows.delivery(db, msg, r, next_attempt_at=clock.now, created_at=clock.now)


async def test_per_minute_rate_holds_the_rest_until_the_next_minute(db: Database) -> None:
    clock = Clock()
    await _queue(db, clock, *[f"m{i}@example.com" for i in range(5)])
    async with RecordingServer() as mx:
        s = _scheduler(db, mx.port, clock, per_minute=2)
        await s.run_until_idle()
        assert len(mx.messages) == 2
        async with db.read() as conn:
            held = list(await conn.execute(select(deliveries).where(deliveries.c.attempts == 0)))
        assert len(held) == 3 and {r.state for r in held} == {"queued"}
        assert {r.next_attempt_at for r in held} == {T0 + timedelta(minutes=1)}

        clock.now += timedelta(minutes=2)  # a fresh minute; the rows say what was sent
        await s.run_until_idle()
        assert len(mx.messages) == 4  # two more, not three
        (row,) = await accounts.read_all(db, clock.now)
        assert row.sent_minute == 2
        await s.transport.close()


async def test_hard_bounce_rate_pauses_the_account_until_resumed(db: Database) -> None:
    clock = Clock()
    await _queue(db, clock, "ok1@example.com", "bad1@example.com", "bad2@example.com")
    await _queue(db, clock, "ok2@example.com")
    async with RecordingServer() as mx:
        for bad in ("bad1@example.com", "bad2@example.com"):
            mx.script_rcpt(bad, "550 5.1.1 No such user")
        s = _scheduler(db, mx.port, clock, account_bounce_rate=0.3, account_bounce_min=4)
        await s.run_until_idle()  # four sent: two hard bounces = 50%
        await s.sync_accounts()  # sees the rate, pauses
        await s.sync_accounts()  # writes the pause for every node
        (row,) = await accounts.read_all(db, clock.now)
        assert row.paused and row.paused_reason == "hard-bounce rate 50%"
        assert row.paused_until is not None
        assert abs(row.paused_until - (clock.now + timedelta(hours=6))) < timedelta(seconds=5)
        assert (row.window_sent, row.window_bounced) == (4, 2)
        sent = len(mx.messages)
        await _queue(db, clock, "later@example.com")
        await s.run_until_idle()
        assert len(mx.messages) == sent  # paused: the fifth waits

        clock.now += timedelta(minutes=1)
        await accounts.set_paused(db, "acct0", False, clock.now)  # relay accounts resume
        await s.sync_accounts()
        (row,) = await accounts.read_all(db, clock.now)
        assert not row.paused and row.window_sent == 0  # counted afresh after a resume
        clock.now += timedelta(hours=6)
        await s.run_until_idle()
        await s.transport.close()
    assert [m.rcpt_tos for m in mx.messages][-1] == ["later@example.com"]
