"""Suppression lookups by scope and expiry, on both databases."""

from __future__ import annotations

from datetime import timedelta

from relay.store import suppressions
from relay.store.db import Database, utcnow
from tests import rows


async def test_scopes_and_expiry(db: Database) -> None:
    shop, other = await rows.tenant(db), await rows.tenant(db)
    async with db.write() as conn:
        assert await suppressions.add(conn, shop, "a@example.com", "hard_bounce", "test")
        assert not await suppressions.add(conn, shop, "a@example.com", "complaint", "again")
        await suppressions.add(conn, None, "g@example.com", "manual")
        await suppressions.add(
            conn, shop, "old@example.com", "hard_bounce", expires_at=utcnow() - timedelta(seconds=1)
        )
    keys = ["a@example.com", "g@example.com", "old@example.com", "free@example.com"]
    async with db.read() as conn:
        assert await suppressions.suppressed_among(conn, shop, keys) == {
            "a@example.com": "complaint",
            "g@example.com": "manual",
        }
        assert await suppressions.suppressed_among(conn, other, keys) == {"g@example.com": "manual"}
        assert await suppressions.read_counter(conn, suppressions.COUNTER) == 4
    async with db.write() as conn:
        assert await suppressions.remove(conn, shop, "a@example.com")
        assert not await suppressions.remove(conn, shop, "a@example.com")
    async with db.read() as conn:
        assert "a@example.com" not in await suppressions.suppressed_among(conn, shop, keys)
