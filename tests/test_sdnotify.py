"""sd_notify datagrams reach a real AF_UNIX socket, as systemd would receive them: from
`sdnotify.notify` itself, and from a real `relay serve` (READY only once its listeners
accept connections, WATCHDOG pings, STOPPING on SIGTERM)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from relay import sdnotify
from tests.peers import free_port
from tests.serving import Served, write_config


def test_notify_sends_datagram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sdnotify.notify("READY=1", "STATUS=serving")
        assert server.recv(4096) == b"READY=1\nSTATUS=serving"


def test_notify_without_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.notify("READY=1")


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval_s() == 5.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert sdnotify.watchdog_interval_s() is None


def test_notify_never_blocks_when_nobody_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        sent = [sdnotify.notify("WATCHDOG=1") for _ in range(10_000)]  # would hang if blocking
        assert sent[0] and not sent[-1]  # the buffer filled up; later pings were dropped


# A real `relay serve` with NOTIFY_SOCKET pointing at a socket this test binds, as systemd
# would run it under Type=notify.


class _Notifications:
    """The datagrams `relay serve` sends, read as they arrive."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.received: list[dict[str, str]] = []

    async def next(self, timeout_s: float = 30) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), timeout_s)
        fields = dict(line.split("=", 1) for line in data.decode().splitlines())
        self.received.append(fields)
        return fields

    async def until(self, key: str, timeout_s: float = 30) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            fields = await self.next(max(0.01, deadline - time.monotonic()))
            if key in fields:
                return fields

    def close(self) -> None:
        self.sock.close()


async def _accepts(smtp_port: int, http_port: int) -> tuple[str, int]:
    """The SMTP greeting and the /healthz status, asked for at once (no retry: a listener
    that is not up yet refuses the connection and the test fails)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", smtp_port)
    try:
        greeting = (await asyncio.wait_for(reader.readline(), 10)).decode()
    finally:
        writer.close()
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"http://127.0.0.1:{http_port}/healthz")
    return greeting, r.status_code


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    db = tmp_path / "relay.db"
    db.write_bytes(sqlite_template.read_bytes())
    return f"sqlite+aiosqlite:///{db}"


async def test_serve_notifies_ready_after_listeners_then_watchdog_and_stopping(
    tmp_path: Path, sqlite_url: str
) -> None:
    config = write_config(tmp_path, sqlite_url, free_port())
    notifications = _Notifications(tmp_path / "notify.sock")
    served = Served(
        config,
        tmp_path,
        env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"},
    )
    try:
        ready = await notifications.until("READY")
        greeting, health = await _accepts(served.smtp_port, served.http_port)
        assert greeting.startswith("220 "), greeting
        assert health == 200
        assert ready["READY"] == "1"
        assert ready["STATUS"] == "serving roles smtp,web,delivery"
        assert notifications.received == [ready]  # nothing before READY

        # WATCHDOG_USEC=200000: a ping every 0.1 s (half the period), without WATCHDOG_PID.
        pings = [await notifications.next(5) for _ in range(3)]
        assert pings == [{"WATCHDOG": "1"}] * 3

        served.signal(signal.SIGTERM)
        stopping = await notifications.until("STOPPING")
        assert stopping == {"STOPPING": "1", "STATUS": "draining"}
        assert await served.wait(30) == 0
    finally:
        served.kill()
        notifications.close()
