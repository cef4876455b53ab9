"""What bounces during delivery do to the suppression list and the account's health.

Real queue (SQLite and MariaDB), real SMTP peer on loopback that answers scripted replies:
a hard bounce suppresses for `bounce.hard_bounce_ttl`; repeated soft failures of distinct
deliveries escalate to a `soft_bounce` suppression, but deferrals and blocks aimed at the
sender never do; a permanent policy block is charged to the pool account's bounce rate.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from relay.config import AccountConfig, BounceConfig, Config, DeliveryConfig
from relay.scheduler import Scheduler
from relay.store import accounts, suppressions
from relay.store.db import Database, utcnow
from relay.store.tables import deliveries
from relay.transport.pool import SmarthostPool
from tests import rows
from tests.peers import RecordingServer


def _config(port: int, **bounce: Any) -> Config:
    account = AccountConfig(name="acct0", host="127.0.0.1", port=port, tls="none")
    delivery = DeliveryConfig(
        mode="smarthost", accounts=[account], connect_timeout=2.0, retry_schedule=[60.0]
    )
    return Config(delivery=delivery, bounce=BounceConfig(**bounce))


async def _run(config: Config, db: Database) -> None:
    transport = SmarthostPool(config.delivery, "relay.test", rng=random.Random(1))
    scheduler = Scheduler(config, db, transport, rng=random.Random(1), owner="w1")
    await scheduler.run_until_idle()
    await transport.close()


async def _send_each(db: Database, tenant: int, *recipients: str) -> None:
    msg = await rows.message(db, tenant)
    for r in recipients:
        await rows.delivery(db, msg, r)


async def _suppressed(db: Database, tenant: int) -> dict[str, tuple[str, Any]]:
    async with db.read() as conn:
        return {
            s.email: (s.reason, s.expires_at)
            for s in await suppressions.list_page(conn, scope=tenant)
        }


async def test_hard_bounce_lifetime_and_policy_block_charges_the_account(db: Database) -> None:
    tenant = await rows.tenant(db)
    await _send_each(db, tenant, "gone@example.com", "spam@example.com", "ok@example.com")
    async with RecordingServer() as mx:
        mx.script_rcpt("gone@example.com", "550 5.1.1 No such user")
        mx.script_rcpt("spam@example.com", "554 5.7.1 Message rejected as spam")
        await _run(_config(mx.port, hard_bounce_ttl=3600.0), db)
    found = await _suppressed(db, tenant)
    assert set(found) == {"gone@example.com"}  # the policy block never suppresses
    reason, expires_at = found["gone@example.com"]
    assert reason == "hard_bounce"
    assert utcnow() + timedelta(minutes=55) < expires_at < utcnow() + timedelta(minutes=65)
    (row,) = await accounts.read_all(db, utcnow())
    # 3 sent through acct0: the hard bounce and the spam block both count against its health.
    assert (row.window_sent, row.window_bounced) == (3, 2)


async def test_soft_failures_escalate_but_deferrals_and_blocks_do_not(db: Database) -> None:
    tenant = await rows.tenant(db)
    async with RecordingServer() as mx:
        mx.script_rcpt("full@example.com", "552 5.2.2 Mailbox full")
        mx.script_rcpt("blocked@example.com", "554 5.7.1 Service unavailable; client host blocked")
        mx.script_rcpt("grey@example.com", "450 4.2.0 Greylisted, try again in a while")
        config = _config(mx.port, soft_bounce_limit=2, soft_bounce_ttl=86400.0)
        # First message: one failure each, below the limit.
        await _send_each(db, tenant, "full@example.com", "blocked@example.com", "grey@example.com")
        await _run(config, db)
        assert await _suppressed(db, tenant) == {}
        # The greylisted delivery is retried (deferred again): deferrals are not failures.
        async with db.write() as conn:
            await conn.execute(deliveries.update().values(next_attempt_at=utcnow()))
        await _send_each(db, tenant, "full@example.com", "blocked@example.com")
        await _run(config, db)
    found = await _suppressed(db, tenant)
    assert set(found) == {"full@example.com"}
    reason, expires_at = found["full@example.com"]
    assert reason == "soft_bounce" and expires_at is not None
    async with db.read() as conn:
        states = {
            (r.recipient, r.state)
            for r in await conn.execute(select(deliveries.c.recipient, deliveries.c.state))
        }
    assert ("grey@example.com", "deferred") in states
