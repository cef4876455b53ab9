"""The scheduler end to end: real queue (SQLite and MariaDB), real SMTP peers on loopback."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from relay.config import AccountConfig, Config, DeliveryConfig
from relay.scheduler import Scheduler, build_transport
from relay.store import accounts, suppressions
from relay.store.db import Database, utcnow
from relay.store.tables import deliveries, delivery_attempts, recipient_events
from relay.transport.pool import SmarthostPool
from relay.transport.sink import SinkTransport
from tests import rows
from tests.peers import RecordingServer, free_port


class Clock:
    def __init__(self) -> None:
        self.now = utcnow() + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.now


def smarthost_config(*ports: int, **delivery: Any) -> Config:
    accounts = [
        AccountConfig(name=f"acct{i}", host="127.0.0.1", port=p, tls="none")
        for i, p in enumerate(ports)
    ]
    options: dict[str, Any] = {"mode": "smarthost", "accounts": accounts, "connect_timeout": 2.0}
    options.update(delivery)
    return Config(delivery=DeliveryConfig(**options))


def scheduler(config: Config, db: Database, clock: Clock, **kw: Any) -> Scheduler:
    transport = SmarthostPool(config.delivery, "relay.test", rng=random.Random(1), **kw)
    return Scheduler(config, db, transport, clock=clock, rng=random.Random(1), owner="w1")


async def _deliveries(db: Database) -> dict[str, Any]:
    async with db.read() as conn:
        result = await conn.execute(select(deliveries).order_by(deliveries.c.id))
        return {r.recipient: r for r in result}


async def _queue(db: Database, *recipients: str, **values: Any) -> tuple[int, list[int]]:
    tenant = await rows.tenant(db)
    msg = await rows.message(db, tenant)
    ids = [await rows.delivery(db, msg, r, **values) for r in recipients]
    return tenant, ids


async def test_delivers_with_connection_reuse(db: Database) -> None:
    recipients = [f"user{i}@example.com" for i in range(12)]
    await _queue(db, *recipients)
    async with RecordingServer() as mx:
        config = smarthost_config(mx.port, messages_per_connection=5, workers=1)
        s = scheduler(config, db, Clock())
        await s.run_until_idle()
        await s.transport.close()
    assert sorted(r for m in mx.messages for r in m.rcpt_tos) == sorted(recipients)
    assert mx.messages[0].data.startswith(b"From: Shop")
    assert mx.connections == 3  # 12 messages, 5 per connection
    rows_ = await _deliveries(db)
    assert {r.state for r in rows_.values()} == {"delivered"}
    assert all(r.attempts == 1 and r.lease_owner is None for r in rows_.values())
    async with db.read() as conn:
        attempts = (await conn.execute(select(delivery_attempts))).all()
        events = (await conn.execute(select(recipient_events))).all()
    assert len(attempts) == 12 and {a.result for a in attempts} == {"delivered"}
    assert {a.account for a in attempts} == {"acct0"}
    assert [e.type for e in events] == ["delivered"] * 12


async def test_deferral_backoff_then_success_then_expiry(db: Database) -> None:
    await _queue(db, "soft@example.com", "expire@example.com")
    clock = Clock()
    async with RecordingServer() as mx:
        mx.script_rcpt("soft@example.com", "451 4.2.0 Mailbox busy")
        mx.script_rcpt("expire@example.com", "452 4.2.2 Mailbox full")
        config = smarthost_config(
            mx.port, retry_schedule=[60.0, 600.0], retry_jitter=0.0, max_age=1000.0
        )
        s = scheduler(config, db, clock)
        await s.run_until_idle()
        first = await _deliveries(db)
        assert first["soft@example.com"].state == "deferred"
        assert first["soft@example.com"].last_reply == "451 4.2.0 Mailbox busy"
        assert first["soft@example.com"].next_attempt_at == clock.now + timedelta(seconds=60)

        connections = mx.connections
        await s.run_until_idle()  # nothing due yet: nothing happens
        assert (await _deliveries(db))["soft@example.com"].attempts == 1
        assert mx.connections == connections

        clock.now += timedelta(seconds=61)
        del mx.rcpt_replies["soft@example.com"]
        await s.run_until_idle()
        second = await _deliveries(db)
        assert second["soft@example.com"].state == "delivered"
        assert second["soft@example.com"].attempts == 2
        # second retry step: 600 s; still within max_age
        assert second["expire@example.com"].state == "deferred"
        assert second["expire@example.com"].next_attempt_at == clock.now + timedelta(seconds=600)

        clock.now += timedelta(seconds=601)  # the next retry would land past max_age
        await s.run_until_idle()
        await s.transport.close()
    final = await _deliveries(db)
    assert final["expire@example.com"].state == "failed"
    assert final["expire@example.com"].bounce_reason == "expired"
    assert final["expire@example.com"].last_reply_code == 452
    assert final["expire@example.com"].final_at is not None


async def test_hard_bounce_suppresses_policy_block_does_not(db: Database) -> None:
    tenant, _ = await _queue(db, "gone@example.com", "blocked@example.com", "ok@example.com")
    async with RecordingServer() as mx:
        mx.script_rcpt("gone@example.com", "550 5.1.1 No such user")
        mx.script_rcpt("blocked@example.com", "554 5.7.1 Message rejected as spam")
        s = scheduler(smarthost_config(mx.port), db, Clock())
        await s.run_until_idle()
        await s.transport.close()
    found = await _deliveries(db)
    assert found["gone@example.com"].state == "bounced"
    assert found["gone@example.com"].bounce_kind == "hard"
    assert found["blocked@example.com"].state == "failed"
    assert found["ok@example.com"].state == "delivered"
    async with db.read() as conn:
        suppressed = await suppressions.suppressed_among(
            conn, tenant, ["gone@example.com", "blocked@example.com"]
        )
        events = {e.recipient: e for e in (await conn.execute(select(recipient_events))).all()}
    assert suppressed == {"gone@example.com": "hard_bounce"}
    assert events["gone@example.com"].type == "bounced"
    assert events["gone@example.com"].detail["enhanced"] == "5.1.1"
    assert events["blocked@example.com"].detail["kind"] == "soft"


async def test_suppressed_recipient_is_not_sent(db: Database) -> None:
    tenant, _ = await _queue(db, "unsub@example.com", "fine@example.com")
    async with db.write() as conn:
        await suppressions.add(conn, tenant, "unsub@example.com", "unsubscribe")
    async with RecordingServer() as mx:
        s = scheduler(smarthost_config(mx.port), db, Clock())
        await s.run_until_idle()
        await s.transport.close()
    assert [m.rcpt_tos for m in mx.messages] == [["fine@example.com"]]
    found = await _deliveries(db)
    assert found["unsub@example.com"].state == "suppressed"
    assert found["unsub@example.com"].attempts == 0


async def test_no_suppression_override_holds_at_the_pre_send_check(db: Database) -> None:
    # Suppressed after intake (e.g. a bounce of another message): the override, stored on
    # the delivery (X-Relay-No-Suppression from an allowed credential, or `relay queue retry
    # --no-suppression`), still lets this one delivery go; the list itself is unchanged.
    tenant, _ = await _queue(db, "vip@example.com", no_suppression=True)
    msg = await rows.message(db, tenant)
    await rows.delivery(db, msg, "other@example.com")
    async with db.write() as conn:
        await suppressions.add(conn, tenant, "vip@example.com", "hard_bounce")
        await suppressions.add(conn, tenant, "other@example.com", "hard_bounce")
    async with RecordingServer() as mx:
        s = scheduler(smarthost_config(mx.port), db, Clock())
        await s.run_until_idle()
        await s.transport.close()
    assert [m.rcpt_tos for m in mx.messages] == [["vip@example.com"]]
    found = await _deliveries(db)
    assert found["vip@example.com"].state == "delivered"
    assert found["other@example.com"].state == "suppressed"
    async with db.read() as conn:
        still = await suppressions.suppressed_among(conn, tenant, ["vip@example.com"])
    assert still == {"vip@example.com": "hard_bounce"}


async def test_failover_to_next_account_and_pause(db: Database) -> None:
    await _queue(db, *[f"u{i}@example.com" for i in range(4)])
    dead = free_port()
    async with RecordingServer() as mx:
        config = smarthost_config(dead, mx.port, workers=1)
        s = scheduler(config, db, Clock(), pause_after_failures=2)
        await s.run_until_idle()
        pool = s.transport
        assert isinstance(pool, SmarthostPool)
        assert pool.accounts[0].paused_until > 0
        assert "consecutive" in pool.accounts[0].paused_reason
        await pool.close()
    assert len(mx.messages) == 4
    found = await _deliveries(db)
    assert {r.state for r in found.values()} == {"delivered"}
    assert {r.account for r in found.values()} == {"acct1"}


async def test_all_accounts_down_defers(db: Database) -> None:
    await _queue(db, "a@example.com")
    s = scheduler(smarthost_config(free_port()), db, Clock())
    await s.run_until_idle()
    await s.transport.close()
    row = (await _deliveries(db))["a@example.com"]
    assert row.state == "deferred"
    assert row.last_reply.startswith("451 4.4.1 cannot connect")


async def test_retry_after_in_reply_is_honoured(db: Database) -> None:
    await _queue(db, "later@example.com")
    clock = Clock()
    async with RecordingServer() as mx:
        mx.script_rcpt("later@example.com", "450 4.7.0 Rate limited, try again in 2 hours")
        s = scheduler(smarthost_config(mx.port, retry_jitter=0.0), db, clock)
        await s.run_until_idle()
        await s.transport.close()
    row = (await _deliveries(db))["later@example.com"]
    assert row.next_attempt_at == clock.now + timedelta(hours=2)


async def test_sink_mode_writes_maildir(db: Database, tmp_path: Path) -> None:
    await _queue(db, "a@example.com", "b@example.com")
    config = Config(delivery=DeliveryConfig(mode="sink", sink_dir=str(tmp_path / "sink")))
    transport = build_transport(config)
    assert isinstance(transport, SinkTransport)
    s = Scheduler(config, db, transport, clock=Clock())
    await s.run_until_idle()
    files = sorted((tmp_path / "sink" / "new").iterdir())
    assert len(files) == 2
    assert files[0].read_bytes().startswith(b"From: Shop")
    assert not list((tmp_path / "sink" / "tmp").iterdir())


async def test_serve_stops_and_releases(db: Database) -> None:
    await _queue(db, *[f"s{i}@example.com" for i in range(3)])
    async with RecordingServer() as mx:
        mx.data_delay_s = 0.3
        config = smarthost_config(mx.port, workers=10)
        s = scheduler(config, db, Clock())
        stopping = asyncio.Event()
        task = asyncio.create_task(s.serve(stopping))
        await asyncio.sleep(0.1)
        stopping.set()
        await asyncio.wait_for(task, 10)
    found = await _deliveries(db)
    # in-flight attempts were allowed to finish; nothing is left leased
    assert all(r.lease_owner is None for r in found.values())
    assert {r.state for r in found.values()} <= {"delivered", "queued"}


async def test_daily_limit_and_warmup_hold_the_rest(db: Database) -> None:
    await _queue(db, *[f"w{i}@example.com" for i in range(5)])
    clock = Clock()
    async with RecordingServer() as mx:
        # max_age far below the wait: waiting on our own limit must never fail a delivery.
        config = smarthost_config(mx.port, workers=1, retry_jitter=0.0, max_age=3600.0)
        account = config.delivery.accounts[0]
        object.__setattr__(account, "warmup", [2, 4])
        s = scheduler(config, db, clock)
        await s.run_until_idle()
        assert len(mx.messages) == 2  # day 1 of the ramp: 2
        found = await _deliveries(db)
        waiting = [r for r in found.values() if r.state != "delivered"]
        assert len(waiting) == 3
        # Not an attempt: still queued, nothing counted, no attempt row, no event.
        assert {(r.state, r.attempts, r.last_reply) for r in waiting} == {("queued", 0, None)}
        tomorrow = (clock.now + timedelta(days=1)).replace(hour=0, minute=0, second=0)
        latest = tomorrow + timedelta(seconds=2)
        assert all(clock.now < r.next_attempt_at <= latest for r in waiting)
        async with db.read() as conn:
            assert len((await conn.execute(select(delivery_attempts))).all()) == 2
            assert len((await conn.execute(select(recipient_events))).all()) == 2

        clock.now += timedelta(days=1, minutes=1)  # day 2: 4 a day; the counter is per day
        s2 = scheduler(config, db, clock)  # a fresh process reads the shared counters
        await s2.run_until_idle()
        await s.transport.close()
        await s2.transport.close()
    assert len(mx.messages) == 5
    assert {r.state for r in (await _deliveries(db)).values()} == {"delivered"}
    rows_ = await accounts.read_all(db, clock.now)
    assert rows_[0].sent_today == 3


async def test_pause_is_shared_and_resumable(db: Database) -> None:
    await _queue(db, "a@example.com")
    clock = Clock()
    s = scheduler(smarthost_config(free_port()), db, clock, pause_after_failures=1)
    await s.run_until_idle()
    await s.sync_accounts()  # writes the pause
    await s.transport.close()
    (row,) = await accounts.read_all(db, clock.now)
    assert row.paused and "consecutive" in (row.paused_reason or "")
    other = scheduler(smarthost_config(free_port()), db, clock)
    await other.sync_accounts()
    pool = other.transport
    assert isinstance(pool, SmarthostPool)
    assert pool.accounts[0].paused_until > pool.clock()
    await accounts.set_paused(db, "acct0", False, clock.now)
    await other.sync_accounts()
    assert pool.accounts[0].paused_until == 0.0
