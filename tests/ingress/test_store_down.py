"""The database goes away under a running ingress: 451 4.3.0, nothing half-written, recovery.

MariaDB is reached through a TCP proxy owned by the test, which can cut every connection
(the server is gone) or cut the one connection that is about to send COMMIT (the server
dies mid-transaction, after the INSERTs reached it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiosmtplib
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from relay.config import DatabaseConfig
from relay.ingress import replies, server
from relay.store.db import Database
from relay.store.tables import deliveries, messages, recipients
from tests.ingress.conftest import start_ingress

RAW = b"From: news@shop.example\r\nTo: ann@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


class Proxy:
    """Forwards 127.0.0.1:port to the MariaDB server; `down()` cuts everything."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.cut_on_commit = False  # drop the connection that sends COMMIT, once
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, client: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while chunk := await src.read(65536):
                    if client and self.cut_on_commit and b"COMMIT" in chunk.upper():
                        self.cut_on_commit = False
                        writer.transport.abort()
                        up_writer.transport.abort()  # the server sees a dead client: rollback
                        return
                    dst.write(chunk)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        finally:
            self._writers -= {writer, up_writer}


@pytest.fixture
async def proxied(db_url: str) -> AsyncIterator[tuple[Proxy, Database, Database]]:
    if db_url.startswith("sqlite"):
        pytest.skip("a TCP proxy is how we take MariaDB away (SQLite: test_security.py)")
    url = make_url(db_url)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 3306)
    await proxy.up()
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    db = Database.from_config(DatabaseConfig(url=through))
    direct = Database.from_config(DatabaseConfig(url=db_url))
    try:
        yield proxy, db, direct
    finally:
        await db.dispose()
        await direct.dispose()
        with contextlib.suppress(Exception):
            await proxy.down()


async def counts(direct: Database) -> tuple[int, int, int]:
    found = []
    async with direct.read() as conn:
        for table in (messages, deliveries, recipients):
            found.append((await conn.execute(select(func.count()).select_from(table))).scalar_one())
    return found[0], found[1], found[2]


async def test_server_gone_gives_451_then_recovers(proxied) -> None:  # type: ignore[no-untyped-def]
    proxy, db, direct = proxied
    running, servers = await start_ingress(db)
    try:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=running.port, timeout=30, start_tls=False)
        await smtp.connect()
        await smtp.login(running.credential.username, running.password)
        await proxy.down()
        with pytest.raises(aiosmtplib.SMTPDataError) as e:
            await smtp.sendmail("news@shop.example", ["ann@example.org", "bob@example.org"], RAW)
        assert f"{e.value.code} {e.value.message}" == replies.STORE_DOWN
        assert await counts(direct) == (0, 0, 0)
        await proxy.up()  # same port: the server is back
        await smtp.sendmail("news@shop.example", ["ann@example.org", "bob@example.org"], RAW)
        await smtp.quit()
        assert await counts(direct) == (1, 2, 2)
    finally:
        await server.stop(running.shared, servers, drain_s=1)


async def test_connection_lost_before_commit_keeps_nothing(proxied) -> None:  # type: ignore[no-untyped-def]
    proxy, db, direct = proxied
    running, servers = await start_ingress(db)
    try:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=running.port, timeout=30, start_tls=False)
        await smtp.connect()
        await smtp.login(running.credential.username, running.password)
        proxy.cut_on_commit = True  # the INSERTs reach the server, the COMMIT does not
        with pytest.raises(aiosmtplib.SMTPDataError) as e:
            await smtp.sendmail("news@shop.example", ["ann@example.org", "bob@example.org"], RAW)
        assert f"{e.value.code} {e.value.message}" == replies.STORE_DOWN
        assert not proxy.cut_on_commit  # the cut really happened at COMMIT
        assert await counts(direct) == (0, 0, 0)
        await smtp.sendmail("news@shop.example", ["ann@example.org"], RAW)
        await smtp.quit()
        assert await counts(direct) == (1, 1, 1)
    finally:
        await server.stop(running.shared, servers, drain_s=1)
