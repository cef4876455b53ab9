"""The app under Starlette's TestClient and under a real uvicorn server on loopback:
pixel and redirect on the wire, and the event buffer flushed when the server stops."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from starlette.testclient import TestClient

from relay.config import Config, DatabaseConfig
from relay.render.tokens import Keyring, TokenData, TokenKind
from relay.store.db import Database
from relay.store.tables import links, recipient_events
from relay.web.app import create_app, run
from relay.web.pixel import GIF as PIXEL
from tests import rows
from tests.web.conftest import SECRET

KEYS = Keyring(SECRET.encode())


async def _setup(url: str) -> tuple[int, int]:
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        tenant_id = await rows.tenant(db)
        message_id = await rows.message(db, tenant_id)
        delivery_id = await rows.delivery(db, message_id, state="delivered")
        async with db.write() as conn:
            result = await conn.execute(
                links.insert().values(message_id=message_id, position=0, url="https://x.example/")
            )
        return delivery_id, int(result.inserted_primary_key[0])  # type: ignore[index]
    finally:
        await db.dispose()


async def _count_events(url: str) -> int:
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        async with db.read() as conn:
            query = select(func.count()).select_from(recipient_events)
            return int((await conn.execute(query)).scalar_one())
    finally:
        await db.dispose()


def _config(tmp_path: Path, url: str, flush_s: float = 60.0) -> Config:
    return Config.model_validate(
        {
            "data_dir": str(tmp_path),
            "tracking": {"secret": SECRET},
            "database": {"url": url},
            "http": {"event_flush_interval": flush_s},
        }
    )


def test_testclient_pixel_click_and_flush_on_shutdown(tmp_path: Path, db_url: str) -> None:
    delivery_id, link_id = asyncio.run(_setup(db_url))
    config = _config(tmp_path, db_url)
    # No pool: connections must not outlive the TestClient's event loop.
    db = Database(create_async_engine(db_url, poolclass=NullPool))
    app = create_app(config, db)
    with TestClient(app) as client:
        r = client.get(f"/track/open/{KEYS.sign(TokenData(TokenKind.OPEN, delivery_id))}")
        assert r.content == PIXEL and r.headers["content-type"] == "image/gif"
        token = KEYS.sign(TokenData(TokenKind.CLICK, delivery_id, link_id))
        r = client.get(f"/track/click/{token}", follow_redirects=False)
        assert r.status_code == 302 and r.headers["location"] == "https://x.example/"
        assert len(app.state.relay.buffer) == 2  # the flush interval is a minute away
    assert asyncio.run(_count_events(db_url)) == 2  # written by the lifespan's final flush


async def test_uvicorn_serves_and_flushes_on_stop(tmp_path: Path, db_url: str) -> None:
    delivery_id, link_id = await _setup(db_url)
    config = _config(tmp_path, db_url)
    db = Database.from_config(config.database)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    stopping = asyncio.Event()
    server = asyncio.create_task(run(config, db, stopping, sock=sock))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            r = await client.get(f"/track/open/{KEYS.sign(TokenData(TokenKind.OPEN, delivery_id))}")
            assert r.status_code == 200 and r.content == PIXEL
            assert r.headers["cache-control"].startswith("no-store")
            bad = KEYS.sign(TokenData(TokenKind.CLICK, delivery_id, link_id))[:-1] + "A"
            r = await client.get(f"/track/click/{bad}")
            assert r.status_code == 404 and "location" not in r.headers
            assert (await client.get("/readyz")).status_code == 200
        assert await _count_events(db_url) == 0
    finally:
        stopping.set()
        await asyncio.wait_for(server, 20)
        await db.dispose()
    assert await _count_events(db_url) == 1


async def test_readyz_reports_missing_schema(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    config = _config(tmp_path, url)
    db = Database.from_config(config.database)
    try:
        transport = httpx.ASGITransport(app=create_app(config, db))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
    finally:
        await db.dispose()
