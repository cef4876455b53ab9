"""`relay serve` as operators run it: a real process, real signals, real SMTP and HTTP.

SIGTERM drains (a client in DATA still gets its 250, new and idle clients get 421,
deliveries in flight finish or go back to the queue, buffered tracking events are written and
their webhooks POSTed, exit 0), all within service.drain_timeout; a second signal exits at
once (1) without losing what was committed; SIGHUP reloads the safe keys, names the others,
and keeps the old config when the new one is invalid. Secrets and DKIM keys are read before
any listener opens.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from relay.config import DatabaseConfig
from relay.store import webhooks
from relay.store.db import Database
from relay.store.tables import deliveries, delivery_attempts, messages, recipient_events
from relay.store.tenants import get_tenant
from tests.peers import RecordingServer, free_port
from tests.serving import Served, SmtpClient, html_message, tenant_with_login, write_config
from tests.test_cli import relay


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SIGHUP does not depend on the database: SQLite only."""
    target = tmp_path / "relay.db"
    target.write_bytes(sqlite_template.read_bytes())
    return f"sqlite+aiosqlite:///{target}"


_PIXEL = re.compile(rb"http://127\.0\.0\.1:\d+/track/open/[A-Za-z0-9_\-]+")


async def _rows(url: str) -> tuple[dict[str, tuple[str, str | None]], int, list[str]]:
    """{recipient: (state, lease_owner)}, messages with a body, event types."""
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        async with db.read() as conn:
            found = {
                r.recipient: (r.state, r.lease_owner)
                for r in await conn.execute(
                    select(deliveries.c.recipient, deliveries.c.state, deliveries.c.lease_owner)
                )
            }
            bodies = len(
                (await conn.execute(select(messages.c.id).where(messages.c.raw.is_not(None)))).all()
            )
            types = [r.type for r in await conn.execute(select(recipient_events.c.type))]
        return found, bodies, types
    finally:
        await db.dispose()


async def _send(port: int, login: tuple[str, str], rcpt: str, marker: str = "hello") -> str:
    client, banner = await SmtpClient.connect(port)
    assert banner.startswith("220"), banner
    assert (await client.login(*login)).startswith("235")
    await client.begin([rcpt])
    await client.send_raw(html_message(rcpt, marker) + b".\r\n")
    reply = await client.reply()
    await client.command("QUIT")
    await client.close()
    return reply


async def _until(check: Callable[[], bool], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def _wait_state(url: str, rcpt: str, state: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while (await _rows(url))[0].get(rcpt, ("", None))[0] != state:
        assert time.monotonic() < deadline, f"{rcpt} never reached {state}"
        await asyncio.sleep(0.1)


@asynccontextmanager
async def _webhook_receiver(url: str) -> AsyncIterator[list[dict[str, Any]]]:
    """A plain HTTP endpoint on loopback, registered as the tenant's webhook (every event);
    yields the JSON bodies POSTed to it."""
    got: list[dict[str, Any]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        got.append(json.loads(await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        tenant = await get_tenant(db, "shop")
        async with db.write() as conn:
            await webhooks.create(conn, tenant.id, f"http://127.0.0.1:{port}/hook", [])
    finally:
        await db.dispose()
    try:
        yield got
    finally:
        server.close()
        await server.wait_closed()


async def test_sigterm_drains_and_exits_0(tmp_path: Path, db_url: str) -> None:
    login = await tenant_with_login(db_url)
    async with RecordingServer() as mx, _webhook_receiver(db_url) as posted:
        served = Served(write_config(tmp_path, db_url, mx.port), tmp_path)
        try:
            await served.ready()
            assert served.events("service.starting")[0]["loop"] == "uvloop"
            # 1. A delivered HTML message; its open pixel is fetched and waits in the buffer.
            assert (await _send(served.smtp_port, login, "r1@dest.example")).startswith("250")
            await _until(lambda: bool(mx.messages))  # mx runs in its own thread
            pixel = _PIXEL.search(mx.messages[0].data.replace(b"=\r\n", b""))
            assert pixel is not None, mx.messages[0].data
            async with httpx.AsyncClient() as http:
                assert (await http.get(pixel.group().decode())).status_code == 200
            # 2. A delivery in flight: the smarthost takes 2 s to answer DATA.
            mx.data_delay_s = 2.0
            assert (await _send(served.smtp_port, login, "r2@dest.example")).startswith("250")
            await _wait_state(db_url, "r2@dest.example", "sending")
            # 3. A client in the middle of DATA.
            client, _ = await SmtpClient.connect(served.smtp_port)
            assert (await client.login(*login)).startswith("235")
            await client.begin(["r3@dest.example"])
            body = html_message("r3@dest.example", "late")
            await client.send_raw(body[:40])
            # 4. A client logged in but between transactions.
            idle, _ = await SmtpClient.connect(served.smtp_port)
            assert (await idle.login(*login)).startswith("235")

            served.signal(signal.SIGTERM)
            await served.wait_for_event("service.stopping")
            assert (await idle.reply()).startswith("421 4.3.2")  # sent away at once
            assert await idle.reader.read() == b""
            await idle.close()
            newcomer, banner = await SmtpClient.connect(served.smtp_port)
            assert banner.startswith("421 4.3.2"), banner
            await newcomer.close()
            started = time.monotonic()
            await client.send_raw(body[40:] + b".\r\n")
            reply = await client.reply()
            assert reply.startswith("250 2.0.0"), reply
            assert time.monotonic() - started < 5
            # The drain accepts no new transaction on that session.
            assert (await client.command("MAIL FROM:<app@shop.example>")).startswith("421 4.3.2")
            await client.close()

            assert await served.wait(30) == 0, served.text()
        finally:
            served.kill()
        hooks = [p["type"] for p in posted]
    found, bodies, types = await _rows(db_url)
    assert bodies == 3  # the message accepted during the drain is durable
    assert found["r1@dest.example"][0] == "delivered"
    assert found["r2@dest.example"][0] == "delivered"  # the attempt in flight finished
    assert found["r3@dest.example"] == ("queued", None)  # accepted, waits for the next start
    assert all(owner is None for _, owner in found.values())  # no lease left behind
    assert "opened" in types  # the event buffer was flushed on the way out
    assert served.events("service.stopped")[0]["forced"] is False
    assert [m.rcpt_tos for m in mx.messages] == [["r1@dest.example"], ["r2@dest.example"]]
    # The open waited in the buffer (flush interval 1 h): written on the way out, and its
    # webhook POSTed before the process exited.
    assert "opened" in hooks, hooks


async def test_second_signal_exits_at_once(tmp_path: Path, db_url: str) -> None:
    login = await tenant_with_login(db_url)
    async with RecordingServer() as mx:
        mx.data_delay_s = 30.0  # the delivery is still in flight when we stop
        config = write_config(tmp_path, db_url, mx.port)
        served = Served(config, tmp_path, "--loop", "asyncio")  # the stock loop works too
        try:
            await served.ready()
            assert served.events("service.starting")[0]["loop"] == "asyncio"
            assert (await _send(served.smtp_port, login, "r1@dest.example")).startswith("250")
            await _wait_state(db_url, "r1@dest.example", "sending")
            client, _ = await SmtpClient.connect(served.smtp_port)
            assert (await client.login(*login)).startswith("235")
            await client.begin(["r2@dest.example"])
            await client.send_raw(b"Subject: never finished\r\n")  # holds the drain open

            served.signal(signal.SIGTERM)
            await served.wait_for_event("service.stopping")
            started = time.monotonic()
            served.signal(signal.SIGINT)  # Ctrl-C counts as the second signal too
            assert await served.wait(10) == 1, served.text()
            assert time.monotonic() - started < 5
            await client.close()
        finally:
            served.kill()
    assert served.events("service.forced_stop")
    found, bodies, _ = await _rows(db_url)
    # What was committed stays: the message and its delivery, leased until the lease
    # expires and any worker takes it over (tests/test_delivery_processes.py).
    assert bodies == 1
    assert list(found) == ["r1@dest.example"]
    assert found["r1@dest.example"][0] in {"sending", "queued"}


async def test_drain_deadline_cuts_what_is_left_and_releases_its_lease(
    tmp_path: Path, db_url: str
) -> None:
    login = await tenant_with_login(db_url)
    async with RecordingServer() as mx:
        mx.data_delay_s = 30.0  # the attempt cannot finish within the 2 s deadline
        config = write_config(tmp_path, db_url, mx.port, drain_timeout="2s")
        served = Served(config, tmp_path)
        try:
            await served.ready()
            assert (await _send(served.smtp_port, login, "r1@dest.example")).startswith("250")
            await _wait_state(db_url, "r1@dest.example", "sending")
            slow, _ = await SmtpClient.connect(served.smtp_port)
            assert (await slow.login(*login)).startswith("235")
            await slow.begin(["r2@dest.example"])
            await slow.send_raw(b"Subject: still typing\r\n")  # never ends its DATA

            started = time.monotonic()
            served.signal(signal.SIGTERM)
            assert await served.wait(20) == 0, served.text()
            elapsed = time.monotonic() - started
            assert await slow.reader.read() == b""  # cut at the deadline, no 250
            await slow.close()
        finally:
            served.kill()
    assert 2 <= elapsed < 2 + 5, elapsed  # drain_timeout, plus the last writes at most
    assert not served.events("service.drain_timeout")  # the roles kept to it themselves
    found, bodies, _ = await _rows(db_url)
    assert bodies == 1  # the unfinished DATA left nothing behind
    assert found == {"r1@dest.example": ("queued", None)}  # lease released
    db = Database.from_config(DatabaseConfig(url=db_url))
    try:
        async with db.read() as conn:
            tried = (await conn.execute(select(delivery_attempts.c.id))).all()
            attempts = (await conn.execute(select(deliveries.c.attempts))).scalar()
    finally:
        await db.dispose()
    assert tried == [] and attempts == 0  # the cut attempt is not counted against it


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        (
            '[[dkim.keys]]\ndomain = "shop.example"\nselector = "s1"\nkey_file = "gone.key"\n',
            "dkim.keys[0].key_file",
        ),
        (
            '[delivery]\nmode = "smarthost"\n[[delivery.accounts]]\nname = "a"\n'
            'host = "127.0.0.1"\npassword_file = "gone.pass"\n',
            "delivery.accounts.0.password_file",
        ),
    ],
)
def test_secrets_and_keys_are_read_before_any_listener(
    tmp_path: Path, sqlite_url: str, toml: str, key: str
) -> None:
    smtp_port, http_port = free_port(), free_port()
    (tmp_path / "relay.toml").write_text(
        f'[log]\nformat = "json"\n[database]\nurl = "{sqlite_url}"\n'
        f'[smtp]\nlisten = ["127.0.0.1:{smtp_port}"]\n[http]\nlisten = "127.0.0.1:{http_port}"\n'
        + toml
    )
    out = relay("--config", "relay.toml", "serve", cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith(f"relay: config error: {key}: cannot read")
    assert "Traceback" not in out.stdout + out.stderr
    assert "listening" not in out.stdout  # no role got as far as opening a port


async def test_sighup_reloads_safe_keys_and_keeps_old_config_when_invalid(
    tmp_path: Path, sqlite_url: str
) -> None:
    db_url = sqlite_url
    login = await tenant_with_login(db_url)

    async def rcpt_replies(port: int, n: int) -> list[str]:
        client, _ = await SmtpClient.connect(port)
        await client.login(*login)
        await client.command("MAIL FROM:<app@shop.example>")
        out = [(await client.command(f"RCPT TO:<r{i}@dest.example>"))[:3] for i in range(n)]
        await client.command("QUIT")
        await client.close()
        return out

    async with RecordingServer() as mx:
        config = write_config(tmp_path, db_url, mx.port, smtp="max_recipients = 3")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(tmp_path / "notify.sock"))
        notify.setblocking(False)
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000000"}
        served = Served(config, tmp_path, env=env)
        try:
            # READY=1 only once the listeners are bound: connect at once, no retry.
            deadline = time.monotonic() + 30
            while True:
                try:
                    first = notify.recv(4096).decode()
                    break
                except BlockingIOError:
                    assert time.monotonic() < deadline and served.proc.poll() is None
                    await asyncio.sleep(0.01)
            assert first.startswith("READY=1")
            _, writer = await asyncio.open_connection("127.0.0.1", served.smtp_port)
            writer.close()
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"http://127.0.0.1:{served.http_port}/healthz")).is_success
            await served.ready()
            assert await rcpt_replies(served.smtp_port, 4) == ["250", "250", "250", "452"]
            # A reloadable key, one that needs a restart, and a quieter log level.
            write_config(
                tmp_path,
                db_url,
                mx.port,
                smtp='hostname = "other.test"\nmax_recipients = 1',
                log_level="warning",
                keep_ports_of=config,
            )
            served.signal(signal.SIGHUP)
            reloaded = await served.wait_for_event("service.reloaded")
            assert reloaded["applied"] == ["log.level", "smtp.max_recipients"]
            restart = await served.wait_for_event("service.reload_needs_restart")
            assert restart["keys"] == ["smtp.hostname"]
            assert await rcpt_replies(served.smtp_port, 2) == ["250", "452"]
            sessions = len(served.events("smtp.session"))
            # Invalid: one clear line, and the running config stays.
            write_config(tmp_path, db_url, mx.port, smtp="max_recipients = 0", keep_ports_of=config)
            served.signal(signal.SIGHUP)
            failed = await served.wait_for_event("service.reload_failed")
            assert failed["key"] == "smtp.max_recipients"
            assert "greater than 0" in failed["problem"]
            assert await rcpt_replies(served.smtp_port, 2) == ["250", "452"]
            served.signal(signal.SIGTERM)
            assert await served.wait(30) == 0, served.text()
        finally:
            served.kill()
    messages = [first]
    with notify:
        while True:
            try:
                messages.append(notify.recv(4096).decode())
            except BlockingIOError:
                break
    # systemd Type=notify: ready, watchdog pings, two reloads, then stopping.
    assert messages[0].startswith("READY=1\nSTATUS=serving roles smtp,web,delivery")
    assert "WATCHDOG=1" in messages
    assert sum(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in messages) == 2
    assert messages.count("READY=1") == 2
    assert messages[-1] == "STOPPING=1\nSTATUS=draining"
    # log.level = "warning" took effect: the later sessions left no INFO line.
    assert len(served.events("smtp.session")) == sessions
    assert served.proc.returncode == 0
