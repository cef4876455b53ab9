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


async def test_list_page_filters_and_cursor(db: Database) -> None:
    shop = await rows.tenant(db)
    async with db.write() as conn:
        for i in range(5):
            await suppressions.add(conn, shop, f"u{i}@example.com", "hard_bounce", "test")
        await suppressions.add(conn, None, "g@example.org", "manual")
        await suppressions.add(conn, shop, "c@example.net", "complaint")
        await suppressions.add(
            conn, shop, "gone@example.com", "hard_bounce", expires_at=utcnow() - timedelta(1)
        )
    async with db.read() as conn:
        everything = await suppressions.list_page(conn)
        assert len(everything) == 7
        first = await suppressions.list_page(conn, limit=3)
        second = await suppressions.list_page(conn, after_id=first[-1].id, limit=3)
        third = await suppressions.list_page(conn, after_id=second[-1].id, limit=3)
        assert [s.email for s in first + second + third] == [s.email for s in everything]
        assert len(third) == 1
        assert [s.email for s in await suppressions.list_page(conn, scope=0)] == ["g@example.org"]
        assert {s.reason for s in await suppressions.list_page(conn, scope=shop)} == {
            "hard_bounce",
            "complaint",
        }
        assert [s.email for s in await suppressions.list_page(conn, reason="complaint")] == [
            "c@example.net"
        ]
        assert len(await suppressions.list_page(conn, email_contains="u_")) == 0  # _ is literal
        assert len(await suppressions.list_page(conn, email_contains="@EXAMPLE.com")) == 5
        expired = await suppressions.list_page(conn, include_expired=True, email_contains="gone")
        assert [s.email for s in expired] == ["gone@example.com"]


async def test_prune_removes_only_expired(db: Database) -> None:
    shop = await rows.tenant(db)
    now = utcnow()
    async with db.write() as conn:
        await suppressions.add(
            conn, shop, "old@example.com", "hard_bounce", expires_at=now - timedelta(days=1)
        )
        await suppressions.add(
            conn,
            shop,
            "new@example.com",
            "hard_bounce",
            expires_at=suppressions.expiry(90 * 86400, now),
        )
        await suppressions.add(
            conn, shop, "forever@example.com", "complaint", expires_at=suppressions.expiry(0, now)
        )
    async with db.write() as conn:
        before = await suppressions.read_counter(conn, suppressions.COUNTER)
        assert await suppressions.prune(conn, now) == 1
        assert await suppressions.prune(conn, now) == 0
        assert await suppressions.read_counter(conn, suppressions.COUNTER) == before + 1
    async with db.read() as conn:
        left = await suppressions.list_page(conn, include_expired=True)
    assert sorted(s.email for s in left) == ["forever@example.com", "new@example.com"]
    assert [s.expires_at for s in left if s.email == "forever@example.com"] == [None]


async def test_cache_refreshes_on_change_counter(db: Database) -> None:
    shop, other = await rows.tenant(db), await rows.tenant(db)
    cache = suppressions.SuppressionCache()
    async with db.read() as conn:
        assert await cache.refresh(conn)
        assert not await cache.refresh(conn)  # nothing changed: no reload
    assert cache.reason_for(shop, "a@example.com") is None
    async with db.write() as conn:
        await suppressions.add(conn, shop, "a@example.com", "hard_bounce")
        await suppressions.add(conn, None, "g@example.com", "manual")
    async with db.read() as conn:
        assert await cache.refresh(conn)
    assert cache.reason_for(shop, "a@example.com") == "hard_bounce"
    assert cache.reason_for(other, "a@example.com") is None
    assert cache.reason_for(other, "g@example.com") == "manual"
    assert cache.reason_for(shop, "a@example.com", now=utcnow() + timedelta(days=1)) == (
        "hard_bounce"
    )
    async with db.write() as conn:
        await suppressions.remove(conn, shop, "a@example.com")
    async with db.read() as conn:
        assert await cache.refresh(conn)
    assert cache.reason_for(shop, "a@example.com") is None and len(cache) == 1


async def test_a_shorter_suppression_never_replaces_a_longer_one(db: Database) -> None:
    shop = await rows.tenant(db)
    soon, later = utcnow() + timedelta(days=14), utcnow() + timedelta(days=90)
    async with db.write() as conn:
        await suppressions.add(conn, shop, "u@example.com", "unsubscribe")  # forever
        # A later hard bounce (90 days) must not let an unsubscribed address come back.
        assert not await suppressions.add(conn, shop, "u@example.com", "hard_bounce", "", later)
        await suppressions.add(conn, shop, "s@example.com", "soft_bounce", "", soon)
        await suppressions.add(conn, shop, "s@example.com", "hard_bounce", "", later)  # longer
        await suppressions.add(conn, shop, "s@example.com", "soft_bounce", "", soon)  # shorter
        # An operator's explicit add takes over whatever was there.
        await suppressions.add(conn, shop, "u@example.com", "manual", "", soon, replace=True)
    async with db.read() as conn:
        found = {
            s.email: (s.reason, s.expires_at)
            for s in await suppressions.list_page(conn, scope=shop)
        }
    assert found["s@example.com"][0] == "hard_bounce"
    assert found["s@example.com"][1] is not None and found["s@example.com"][1] > soon
    assert found["u@example.com"][0] == "manual"


async def test_recipient_status_follows_the_suppression(db: Database) -> None:
    from sqlalchemy import select

    from relay.store.tables import recipients

    shop = await rows.tenant(db)
    now = utcnow()
    async with db.write() as conn:
        for email in ("u@example.com", "c@example.com", "old@example.com"):
            await conn.execute(
                recipients.insert().values(
                    tenant_id=shop,
                    email=email,
                    status="active",
                    first_seen_at=now,
                    last_seen_at=now,
                )  # fmt: skip
            )
        await suppressions.add(conn, shop, "u@example.com", "unsubscribe")
        await suppressions.add(conn, shop, "c@example.com", "complaint")
        await suppressions.add(conn, shop, "c@example.com", "hard_bounce", "", now + timedelta(1))
        await suppressions.add(
            conn, shop, "old@example.com", "hard_bounce", expires_at=now - timedelta(seconds=1)
        )

    async def status() -> dict[str, str]:
        async with db.read() as conn:
            found = await conn.execute(select(recipients.c.email, recipients.c.status))
            return dict(found.all())  # type: ignore[arg-type]

    assert await status() == {
        "u@example.com": "unsubscribed",
        "c@example.com": "complained",  # the shorter hard bounce did not take over
        "old@example.com": "bounced",
    }
    async with db.write() as conn:
        await suppressions.remove(conn, shop, "u@example.com")
        assert await suppressions.prune(conn) == 1
    assert await status() == {
        "u@example.com": "active",
        "c@example.com": "complained",
        "old@example.com": "active",
    }
