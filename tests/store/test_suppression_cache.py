"""The in-memory suppression cache shared by intake and the scheduler, on both databases.

Two caches over one database stand for two processes: each sees the other's changes after a
refresh; additions are fetched incrementally, a removal makes the next refresh reload in full.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from relay.store import suppressions
from relay.store.db import Database, utcnow
from relay.store.suppressions import SuppressionCache
from tests import rows


async def test_loaded_on_start_and_normalizes_addresses(db: Database) -> None:
    shop, other = await rows.tenant(db), await rows.tenant(db)
    async with db.write() as conn:
        await suppressions.add(conn, shop, "a@example.com", "hard_bounce")
        await suppressions.add(conn, None, "g@example.com", "manual")
        await suppressions.add(
            conn, shop, "old@example.com", "hard_bounce", expires_at=utcnow() - timedelta(seconds=1)
        )
    cache = await SuppressionCache.start(db, refresh_s=60)
    assert cache.contains(shop, "A@Example.COM")
    assert not cache.contains(other, "a@example.com")
    assert cache.contains(other, "G@example.com")
    assert not cache.contains(shop, "old@example.com")  # expired
    assert cache.reason_for(shop, "g@example.com") == "manual"
    assert cache.among(shop, ["a@example.com", "free@example.com", "g@example.com"]) == {
        "a@example.com": "hard_bounce",
        "g@example.com": "manual",
    }
    # A row that expires while cached stops counting at its expiry, without a refresh.
    soon = utcnow() + timedelta(hours=1)
    cache.note_added(shop, "soon@example.com", "hard_bounce", soon)
    assert cache.contains(shop, "soon@example.com")
    assert not cache.contains(shop, "soon@example.com", now=soon + timedelta(seconds=1))
    assert cache.contains(shop, "a@example.com", now=soon + timedelta(days=1))  # no expiry


async def test_two_processes_stay_in_sync(db: Database) -> None:
    shop = await rows.tenant(db)
    writer = await SuppressionCache.start(db, refresh_s=60)
    reader = await SuppressionCache.start(db, refresh_s=60)
    assert (writer.reloads, reader.reloads) == (1, 1)
    async with db.write() as conn:
        await suppressions.add(conn, shop, "b@example.com", "complaint")
    writer.note_added(shop, "b@example.com", "complaint")
    assert writer.contains(shop, "b@example.com")  # its own write, at once
    assert not reader.contains(shop, "b@example.com")  # the other process: not yet
    assert await reader.refresh()
    assert reader.contains(shop, "b@example.com")
    assert reader.reloads == 1  # an addition is fetched incrementally
    assert not await reader.refresh()  # nothing moved: one tiny query, no rows read
    async with db.write() as conn:
        assert await suppressions.remove(conn, shop, "b@example.com")
    writer.note_removed(shop, "b@example.com")
    assert not writer.contains(shop, "b@example.com")
    assert await reader.refresh()
    assert not reader.contains(shop, "b@example.com")
    assert reader.reloads == 2  # a removal: full reload


async def test_run_refreshes_periodically(db: Database) -> None:
    shop = await rows.tenant(db)
    cache = await SuppressionCache.start(db, refresh_s=0.05)
    stopping = asyncio.Event()
    task = asyncio.create_task(cache.run(stopping))
    try:
        async with db.write() as conn:
            await suppressions.add(conn, shop, "c@example.com", "unsubscribe")
        async with asyncio.timeout(10):
            while not cache.contains(shop, "c@example.com"):  # noqa: ASYNC110 - the run loop sets no event
                await asyncio.sleep(0.02)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 5)
