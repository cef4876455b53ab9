"""Queue correctness under long work: leases are renewed while a delivery is still being
worked, a lease another worker took over is not taken back, and a suppression added after
the lease stops the send (the in-memory cache is checked right before sending), and a lease
that fails on database trouble is retried instead of stopping the role."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from relay.config import DatabaseConfig
from relay.store import deliveries as queue
from relay.store import suppressions
from relay.store.db import Database, utcnow
from relay.store.tables import deliveries
from tests.peers import RecordingServer
from tests.test_scheduler import Clock, _deliveries, _queue, scheduler, smarthost_config


async def _lease_expiry(db: Database, delivery_id: int) -> object:
    async with db.read() as conn:
        return (
            await conn.execute(
                select(deliveries.c.lease_expires_at).where(deliveries.c.id == delivery_id)
            )
        ).scalar()


async def test_renew_extends_held_leases_and_skips_lost_ones(db: Database) -> None:
    _, (slow, stolen) = await _queue(db, "slow@example.com", "stolen@example.com")
    clock = Clock()
    async with RecordingServer() as mx:
        mx.data_delay_s = 0.5
        s = scheduler(smarthost_config(mx.port, lease_time=60.0, workers=2), db, clock)
        assert await s.fill() == 2
        first = await _lease_expiry(db, slow)
        assert first == clock.now + timedelta(seconds=60)

        clock.now += timedelta(seconds=20)  # 40 s left: more than half, nothing to do yet
        assert await s.renew_leases() == 0
        clock.now += timedelta(seconds=20)  # 20 s left: renew
        async with db.write() as conn:  # meanwhile another worker took one over
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == stolen)
                .values(lease_owner="w2", lease_expires_at=clock.now + timedelta(hours=1))
            )
        assert await s.renew_leases() == 1
        assert await _lease_expiry(db, slow) == clock.now + timedelta(seconds=60)
        assert stolen not in s._lease_until

        clock.now += timedelta(seconds=30)  # past the first expiry, within the renewed one
        assert await queue.recover_expired(db, clock.now) == 0
        await asyncio.gather(*s.in_flight.values())
        await s.flush()
        await s.transport.close()
    found = await _deliveries(db)
    assert found["slow@example.com"].state == "delivered"
    assert found["slow@example.com"].lease_owner is None
    assert found["stolen@example.com"].state == "sending"  # the other worker's, untouched
    assert found["stolen@example.com"].lease_owner == "w2"


async def test_slow_send_outlives_its_first_lease_without_being_recovered(db: Database) -> None:
    await _queue(db, "slow@example.com")
    recovered: list[int] = []

    async def other_worker(stop: asyncio.Event) -> None:
        while not stop.is_set():  # what another process's recovery would do
            recovered.append(await queue.recover_expired(db, utcnow()))
            await asyncio.sleep(0.2)

    async with RecordingServer() as mx:
        mx.data_delay_s = 5.0  # longer than the 4 s lease
        config = smarthost_config(mx.port, lease_time=4.0, command_timeout=30.0)
        s = scheduler(config, db, utcnow)  # type: ignore[arg-type]
        stop = asyncio.Event()
        thief = asyncio.create_task(other_worker(stop))
        try:
            await asyncio.wait_for(s.run_until_idle(), 30)
        finally:
            stop.set()
            await thief
        await s.transport.close()
    assert sum(recovered) == 0
    assert [m.rcpt_tos for m in mx.messages] == [["slow@example.com"]]
    row = (await _deliveries(db))["slow@example.com"]
    assert (row.state, row.attempts) == ("delivered", 1)


async def test_suppressed_after_lease_is_not_sent(db: Database) -> None:
    tenant, _ = await _queue(db, "late@example.com", "fine@example.com")
    clock = Clock()
    async with RecordingServer() as mx:
        s = scheduler(smarthost_config(mx.port, workers=1, batch_size=2), db, clock)
        await s.refresh_suppressions()
        async with db.write() as conn:  # an unsubscribe arrives after the cache was loaded
            await suppressions.add(conn, tenant, "late@example.com", "unsubscribe")
        await s.refresh_suppressions()  # the periodic refresh (bounce.suppression_refresh)
        await s.run_until_idle()
        await s.transport.close()
    assert [m.rcpt_tos for m in mx.messages] == [["fine@example.com"]]
    found = await _deliveries(db)
    assert (found["late@example.com"].state, found["late@example.com"].attempts) == (
        "suppressed",
        0,
    )


async def test_database_locked_while_leasing_is_waited_out(db_url: str) -> None:
    """A lease that fails on database trouble (here: SQLite locked by another writer) is
    retried; the role keeps running and delivers once the database is back."""
    if not db_url.startswith("sqlite"):
        pytest.skip("a held write lock is how we make SQLite unavailable")
    db = Database.from_config(DatabaseConfig(url=db_url, busy_timeout=0.2))
    try:
        await _queue(db, "a@example.com", "b@example.com")
        async with RecordingServer() as mx:
            s = scheduler(smarthost_config(mx.port), db, Clock())
            blocker = sqlite3.connect(db_url.split("///", 1)[1], isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            stopping = asyncio.Event()
            role = asyncio.create_task(s.serve(stopping))
            try:
                await asyncio.sleep(1.0)  # several lease attempts fail meanwhile
                assert not role.done() and mx.messages == []
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            async with asyncio.timeout(20):
                while len(mx.messages) < 2:  # noqa: ASYNC110 - filled by the server thread
                    await asyncio.sleep(0.05)
            stopping.set()
            await role
        assert {r.state for r in (await _deliveries(db)).values()} == {"delivered"}
    finally:
        await db.dispose()
