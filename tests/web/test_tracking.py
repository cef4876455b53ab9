"""Tracking endpoints: pixel, click redirect (and its refusals), unsubscribe, event flush."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from relay.config import Config, DatabaseConfig
from relay.render.tokens import Keyring, TokenData, TokenKind
from relay.store import stats
from relay.store.db import Database
from relay.store.tables import links, recipient_events, suppressions
from relay.web.app import create_app
from relay.web.pixel import GIF as PIXEL
from tests import rows
from tests.web.conftest import NOW, Clock, state

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


async def _delivery(
    db: Database, urls: tuple[str, ...] = ("https://shop.example/a",)
) -> tuple[int, int, list[int]]:
    """A delivered delivery whose message has tracked links: (tenant, delivery, link ids)."""
    tenant_id = await rows.tenant(db)
    message_id = await rows.message(db, tenant_id)
    delivery_id = await rows.delivery(
        db,
        message_id,
        recipient="Reader@Example.com",
        state="delivered",
        final_at=NOW - timedelta(hours=1),
    )
    link_ids = []
    async with db.write() as conn:
        for position, url in enumerate(urls):
            result = await conn.execute(
                links.insert().values(message_id=message_id, position=position, url=url)
            )
            link_ids.append(int(result.inserted_primary_key[0]))  # type: ignore[index]
    return tenant_id, delivery_id, link_ids


async def _events(db: Database) -> list:  # type: ignore[type-arg]
    async with db.read() as conn:
        return list(await conn.execute(select(recipient_events).order_by(recipient_events.c.id)))


async def test_pixel_bytes_headers_and_buffered_open(
    app: Starlette, client: httpx.AsyncClient, db: Database, keyring: Keyring
) -> None:
    tenant_id, delivery_id, _ = await _delivery(db)
    token = keyring.sign(TokenData(TokenKind.OPEN, delivery_id))
    r = await client.get(f"/track/open/{token}", headers={"User-Agent": BROWSER})
    assert r.status_code == 200
    assert r.content == PIXEL and len(r.content) == 43
    assert r.headers["content-type"] == "image/gif"
    assert "no-store" in r.headers["cache-control"]
    assert len(state(app).buffer) == 1  # buffered, not yet written
    assert await _events(db) == []
    await client.get(f"/track/open/{token}", headers={"User-Agent": BROWSER})
    await state(app).buffer.flush()
    events = await _events(db)
    assert [(e.type, e.unique_first, e.machine) for e in events] == [
        ("opened", True, False),
        ("opened", False, False),
    ]
    assert events[0].ip == "198.51.100.7" and events[0].recipient == "reader@example.com"
    async with db.read() as conn:
        t = await stats.totals(conn, tenant_id)
    assert (t["opened"], t["opened_unique"], t["opened_human"]) == (2, 1, 2)


async def test_pixel_with_bad_token_still_a_gif_but_no_event(
    app: Starlette, client: httpx.AsyncClient, keyring: Keyring
) -> None:
    other = Keyring(b"another-installation-secret")
    for token in (
        "garbage",
        other.sign(TokenData(TokenKind.OPEN, 5)),
        keyring.sign(TokenData(TokenKind.CLICK, 5, 1)),
    ):
        r = await client.get(f"/track/open/{token}")
        assert r.status_code == 200 and r.content == PIXEL
    assert len(state(app).buffer) == 0


async def test_click_redirects_to_stored_url_and_implies_open(
    app: Starlette, client: httpx.AsyncClient, db: Database, keyring: Keyring
) -> None:
    tenant_id, delivery_id, (link_id,) = await _delivery(db)
    token = keyring.sign(TokenData(TokenKind.CLICK, delivery_id, link_id))
    r = await client.get(f"/track/click/{token}", headers={"User-Agent": BROWSER})
    assert r.status_code == 302
    assert r.headers["location"] == "https://shop.example/a"
    await state(app).buffer.flush()
    events = await _events(db)
    assert [(e.type, e.unique_first) for e in events] == [("opened", True), ("clicked", True)]
    assert events[0].detail == {"implied_by": "click"}
    assert events[1].url == "https://shop.example/a" and events[1].link_position == 0
    async with db.read() as conn:
        t = await stats.totals(conn, tenant_id)
    assert (t["clicked_unique_human"], t["opened_unique"]) == (1, 1)


async def test_click_refusals_never_redirect(
    client: httpx.AsyncClient, db: Database, keyring: Keyring
) -> None:
    _, delivery_id, (link_id,) = await _delivery(db)
    _, other_delivery, (other_link,) = await _delivery(db, ("https://elsewhere.example/",))
    good = keyring.sign(TokenData(TokenKind.CLICK, delivery_id, link_id))
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    foreign = Keyring(b"another-installation-secret").sign(
        TokenData(TokenKind.CLICK, delivery_id, link_id)
    )
    cases = [
        tampered,
        foreign,
        "not-a-token-at-all",
        keyring.sign(TokenData(TokenKind.OPEN, delivery_id)),  # wrong kind
        keyring.sign(TokenData(TokenKind.CLICK, delivery_id, other_link)),  # other message's link
        keyring.sign(TokenData(TokenKind.CLICK, delivery_id, 999_999)),  # no such link
        keyring.sign(TokenData(TokenKind.CLICK, 999_999, link_id)),  # no such delivery
    ]
    for token in cases:
        r = await client.get(f"/track/click/{token}")
        assert r.status_code == 404, token
        assert "location" not in r.headers
        assert r.headers["content-type"].startswith("text/plain")


async def test_machine_hits_are_flagged_not_dropped(
    app: Starlette, client: httpx.AsyncClient, db: Database, keyring: Keyring, clock: Clock
) -> None:
    tenant_id, delivery_id, (link_id,) = await _delivery(db)
    open_token = keyring.sign(TokenData(TokenKind.OPEN, delivery_id))
    await client.get(
        f"/track/open/{open_token}",
        headers={"User-Agent": "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"},
    )
    await client.head(f"/track/open/{open_token}", headers={"User-Agent": BROWSER})
    await client.get(f"/track/open/{open_token}", headers={"User-Agent": BROWSER})
    await state(app).buffer.flush()
    events = await _events(db)
    assert [(e.machine, e.unique_first) for e in events] == [
        (True, True),
        (True, False),
        (False, False),
    ]
    async with db.read() as conn:
        t = await stats.totals(conn, tenant_id)
    # The first human open still counts as the unique human open.
    assert (t["opened_unique"], t["opened_unique_human"], t["opened_human"]) == (1, 1, 1)


async def test_click_right_after_delivery_and_all_links_at_once_are_machine(
    app: Starlette, client: httpx.AsyncClient, db: Database, keyring: Keyring, clock: Clock
) -> None:
    _, delivery_id, link_ids = await _delivery(db, ("https://a.example/", "https://b.example/"))
    # Two links hit within a second: a scanner following every link.
    for link_id in link_ids:
        await client.get(
            f"/track/click/{keyring.sign(TokenData(TokenKind.CLICK, delivery_id, link_id))}",
            headers={"User-Agent": BROWSER},
        )
    await state(app).buffer.flush()
    clicks = [e for e in await _events(db) if e.type == "clicked"]
    assert [e.machine for e in clicks] == [True, True]

    _, fresh, (link_id,) = await _delivery(db)
    async with db.write() as conn:
        from relay.store.tables import deliveries

        await conn.execute(
            deliveries.update()
            .where(deliveries.c.id == fresh)
            .values(final_at=NOW - timedelta(seconds=2))
        )
    await client.get(
        f"/track/click/{keyring.sign(TokenData(TokenKind.CLICK, fresh, link_id))}",
        headers={"User-Agent": BROWSER},
    )
    await state(app).buffer.flush()
    fresh_click = [e for e in await _events(db) if e.delivery_id == fresh and e.type == "clicked"]
    assert bool(fresh_click[0].machine)


async def test_unsubscribe_page_does_not_unsubscribe_and_post_is_idempotent(
    client: httpx.AsyncClient, db: Database, keyring: Keyring
) -> None:
    tenant_id, delivery_id, _ = await _delivery(db)
    token = keyring.sign(TokenData(TokenKind.UNSUBSCRIBE, delivery_id))
    page = await client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post"' in page.text and "<button" in page.text
    assert "http" not in page.text.split("<body>")[1]  # no external assets
    async with db.read() as conn:
        assert list(await conn.execute(select(suppressions))) == []
    for _ in range(2):
        r = await client.post(
            f"/unsubscribe/{token}",
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 200 and "unsubscribed" in r.text
    async with db.read() as conn:
        rows_ = list(await conn.execute(select(suppressions)))
        t = await stats.totals(conn, tenant_id)
    assert [(s.scope, s.email, s.reason) for s in rows_] == [
        (tenant_id, "reader@example.com", "unsubscribe")
    ]
    assert t["unsubscribed"] == 1
    assert [e.type for e in await _events(db)] == ["unsubscribed"]


async def test_unsubscribe_bad_token_is_404(client: httpx.AsyncClient, keyring: Keyring) -> None:
    bad = Keyring(b"another-installation-secret").sign(TokenData(TokenKind.UNSUBSCRIBE, 1))
    assert (await client.get(f"/unsubscribe/{bad}")).status_code == 404
    assert (await client.post(f"/unsubscribe/{bad}")).status_code == 404
    open_token = keyring.sign(TokenData(TokenKind.OPEN, 1))
    assert (await client.post(f"/unsubscribe/{open_token}")).status_code == 404


async def test_flush_counts_engagement_per_recipient(
    app: Starlette, client: httpx.AsyncClient, db: Database, keyring: Keyring, clock: Clock
) -> None:
    """One flush with two recipients: counts added, last-open/click times kept or moved."""
    from relay.store.tables import recipients

    tenant_id, first, (link_id,) = await _delivery(db)
    message_id = await rows.message(db, tenant_id)
    second = await rows.delivery(
        db, message_id, recipient="other@example.com", state="delivered", final_at=NOW
    )
    earlier = NOW - timedelta(days=3)
    async with db.write() as conn:
        for email in ("reader@example.com", "other@example.com"):
            await conn.execute(
                recipients.insert().values(
                    tenant_id=tenant_id,
                    email=email,
                    first_seen_at=earlier,
                    last_seen_at=earlier,
                    open_count=5,
                    last_open_at=earlier,
                    last_click_at=earlier,
                )
            )
    for _ in range(2):
        await client.get(
            f"/track/open/{keyring.sign(TokenData(TokenKind.OPEN, first))}",
            headers={"User-Agent": BROWSER},
        )
    clock.now = NOW + timedelta(minutes=5)
    await client.get(
        f"/track/click/{keyring.sign(TokenData(TokenKind.CLICK, first, link_id))}",
        headers={"User-Agent": BROWSER},
    )
    await client.get(
        f"/track/open/{keyring.sign(TokenData(TokenKind.OPEN, second))}",
        headers={"User-Agent": BROWSER},
    )
    await state(app).buffer.flush()
    async with db.read() as conn:
        got = {
            r.email: (r.open_count, r.click_count, r.last_open_at, r.last_click_at)
            for r in await conn.execute(select(recipients))
        }
    later = NOW + timedelta(minutes=5)
    assert got == {
        "reader@example.com": (7, 1, NOW, later),
        "other@example.com": (6, 0, later, earlier),
    }


async def test_pixel_fast_path_leaves_other_requests_to_the_app(
    app: Starlette, client: httpx.AsyncClient, db: Database, keyring: Keyring
) -> None:
    _, delivery_id, _ = await _delivery(db)
    token = keyring.sign(TokenData(TokenKind.OPEN, delivery_id))
    r = await client.post(f"/track/open/{token}")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "GET, HEAD"
    r = await client.get(f"/track/open/{token}/extra")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await client.head(f"/track/open/{token}")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "43"
    assert len(state(app).buffer) == 1  # only the HEAD (flagged machine) was an open


async def test_opens_off_serves_the_pixel_without_events(
    config: Config, db: Database, keyring: Keyring
) -> None:
    quiet = config.model_copy(
        update={"tracking": config.tracking.model_copy(update={"opens": False})}
    )
    app = create_app(quiet, db, keyring=keyring)
    _, delivery_id, _ = await _delivery(db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as c:
        r = await c.get(f"/track/open/{keyring.sign(TokenData(TokenKind.OPEN, delivery_id))}")
    assert r.status_code == 200 and r.content == PIXEL
    assert len(state(app).buffer) == 0


async def test_flush_runs_on_the_writer_thread_not_the_request_loop(
    app: Starlette, client: httpx.AsyncClient, db: Database, keyring: Keyring
) -> None:
    """The flush's SQLAlchemy work (statement building, binding every row) happens on the
    buffer's writer thread; the loop serving requests only hands the batch over."""
    import threading

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    _tenant_id, delivery_id, _ = await _delivery(db)
    threads: set[str] = set()

    def seen(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith("INSERT INTO recipient_events"):
            threads.add(threading.current_thread().name)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        token = keyring.sign(TokenData(TokenKind.OPEN, delivery_id))
        assert (await client.get(f"/track/open/{token}")).status_code == 200
        await state(app).buffer.flush()
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert threads == {"relay-event-writer"}
    assert threading.current_thread().name != "relay-event-writer"
    assert len(await _events(db)) == 1


async def test_scan_straddling_two_flushes_is_machine(
    app: Starlette, client: httpx.AsyncClient, db: Database, keyring: Keyring, clock: Clock
) -> None:
    """A scanner's clicks on all links within a second, split by a flush: the stored first
    click (and the open it implied) become machine and leave the human stats; a person
    clicking a minute later is then the first human click."""
    tenant_id, delivery_id, (first, second) = await _delivery(
        db, ("https://a.example/", "https://b.example/")
    )

    async def click(link_id: int) -> None:
        token = keyring.sign(TokenData(TokenKind.CLICK, delivery_id, link_id))
        r = await client.get(f"/track/click/{token}", headers={"User-Agent": BROWSER})
        assert r.status_code == 302

    async def totals() -> tuple[int, ...]:
        async with db.read() as conn:
            t = await stats.totals(conn, tenant_id)
        names = ("clicked", "clicked_human", "clicked_unique_human", "opened_unique_human")
        return tuple(t[name] for name in names)

    await click(first)
    await state(app).buffer.flush()
    assert [(e.type, bool(e.machine)) for e in await _events(db)] == [
        ("opened", False),
        ("clicked", False),
    ]
    assert await totals() == (1, 1, 1, 1)

    clock.now = NOW + timedelta(milliseconds=400)
    await click(second)
    await state(app).buffer.flush()
    assert [(e.type, bool(e.machine)) for e in await _events(db)] == [
        ("opened", True),
        ("clicked", True),
        ("clicked", True),
    ]
    assert await totals() == (2, 0, 0, 0)

    clock.now = NOW + timedelta(minutes=1)
    await click(first)
    await state(app).buffer.flush()
    assert [bool(e.machine) for e in await _events(db)][-1] is False
    assert await totals() == (3, 1, 1, 0)


async def test_clicks_at_a_human_pace_across_flushes_stay_human(
    app: Starlette, client: httpx.AsyncClient, db: Database, keyring: Keyring, clock: Clock
) -> None:
    _, delivery_id, link_ids = await _delivery(db, ("https://a.example/", "https://b.example/"))
    for n, link_id in enumerate(link_ids):
        clock.now = NOW + timedelta(seconds=3 * n)
        token = keyring.sign(TokenData(TokenKind.CLICK, delivery_id, link_id))
        await client.get(f"/track/click/{token}", headers={"User-Agent": BROWSER})
        await state(app).buffer.flush()
    assert [(e.type, bool(e.machine)) for e in await _events(db)] == [
        ("opened", False),
        ("clicked", False),
        ("clicked", False),
    ]


async def test_click_reads_at_most_one_query_and_none_when_cached(
    app: Starlette, client: httpx.AsyncClient, db: Database, keyring: Keyring
) -> None:
    """The redirect needs the URL: a cold click costs one query by primary keys, a cached
    one none (the clicks' events stay in the buffer: no write either)."""
    from sqlalchemy import event

    tenant_id, delivery_id, (link_id,) = await _delivery(db)
    message_id = await rows.message(db, tenant_id)
    other_message = await rows.delivery(db, message_id, recipient="x@example.com")
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if not statement.startswith(("BEGIN", "COMMIT", "ROLLBACK")):  # SQLite's own BEGIN
            statements.append(statement)

    async def click(delivery: int, link: int) -> int:
        statements.clear()
        token = keyring.sign(TokenData(TokenKind.CLICK, delivery, link))
        r = await client.get(f"/track/click/{token}", headers={"User-Agent": BROWSER})
        assert all(s.lstrip().upper().startswith("SELECT") for s in statements), statements
        return r.status_code

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        assert await click(delivery_id, link_id) == 302 and len(statements) == 1
        assert await click(delivery_id, link_id) == 302 and statements == []
        # The link is cached; a delivery of another message needs its message id only,
        # and its token for this link is still refused.
        assert await click(other_message, link_id) == 404 and len(statements) == 1
        assert await click(other_message, link_id) == 404 and statements == []
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
    assert len(state(app).buffer) == 2


@pytest.mark.parametrize(
    "dead_url",
    ["mysql+aiomysql://root@127.0.0.1:1/relay", "sqlite+aiosqlite:///{tmp}/no/such/dir/relay.db"],
    ids=["mysql-refused", "sqlite-unopenable"],
)
async def test_database_down_pixel_still_served_reads_and_writes_503(
    config: Config, keyring: Keyring, tmp_path: Path, dead_url: str
) -> None:
    """The open pixel never waits on the database; a cold click (it must read its URL) and
    an unsubscribe (written at once) answer 503 `unavailable`, so the sender retries."""
    dead = Database.from_config(DatabaseConfig(url=dead_url.format(tmp=tmp_path)))
    app = create_app(config, dead, keyring=keyring)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as c:
            r = await c.get(f"/track/open/{keyring.sign(TokenData(TokenKind.OPEN, 7))}")
            assert r.status_code == 200 and r.content == PIXEL
            click = await c.get(f"/track/click/{keyring.sign(TokenData(TokenKind.CLICK, 7, 3))}")
            unsubscribe = await c.post(
                f"/unsubscribe/{keyring.sign(TokenData(TokenKind.UNSUBSCRIBE, 7))}",
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        for r in (click, unsubscribe):
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "unavailable"
            assert "location" not in r.headers
        assert len(state(app).buffer) == 1  # the open waits in the buffer
    finally:
        await dead.dispose()
