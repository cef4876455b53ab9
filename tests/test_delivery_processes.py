"""Delivery as operators run it: real `relay serve --role delivery` processes on one queue.

Several processes share MariaDB and must deliver every message exactly once; a worker
killed mid-batch loses nothing (its leases expire and another worker takes them over).
Also `relay accounts` from the command line.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import insert

from relay.config import DatabaseConfig
from relay.store import deliveries as queue
from relay.store.db import Database, utcnow
from relay.store.tables import deliveries
from tests import rows
from tests.peers import RecordingServer
from tests.test_cli import relay


def _config(tmp_path: Path, db_url: str, port: int, **delivery: object) -> Path:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in delivery.items())
    path = tmp_path / "relay.toml"
    path.write_text(
        f'[database]\nurl = "{db_url}"\n'
        f'[delivery]\nmode = "smarthost"\nretry_schedule = ["1s"]\n{extra}'
        f'[[delivery.accounts]]\nname = "up"\nhost = "127.0.0.1"\nport = {port}\ntls = "none"\n'
    )
    return path


async def _fill(url: str, n: int) -> None:
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        tenant = await rows.tenant(db)
        msg = await rows.message(db, tenant)
        now = utcnow()
        batch = [
            {
                "message_id": msg,
                "tenant_id": tenant,
                "recipient": f"r{i}@example.com",
                "recipient_key": f"r{i}@example.com",
                "domain": "example.com",
                "state": "queued",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(n)
        ]
        async with db.write() as conn:
            for start in range(0, n, 1000):
                await conn.execute(insert(deliveries), batch[start : start + 1000])
    finally:
        await db.dispose()


async def _counts(url: str) -> dict[str, int]:
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        return await queue.state_counts(db)
    finally:
        await db.dispose()


def _serve(config: Path, cwd: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return subprocess.Popen(
        [sys.executable, "-m", "relay", "-c", str(config), "serve", "--role", "delivery"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _wait_delivered(url: str, n: int, timeout_s: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    counts = await _counts(url)
    while counts.get("delivered", 0) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        counts = await _counts(url)
    return counts


async def _many_processes(tmp_path: Path, url: str, n: int, processes: int) -> None:
    await _fill(url, n)
    async with RecordingServer() as sink:
        config = _config(tmp_path, url, sink.port, workers=20, batch_size=50)
        procs = [_serve(config, tmp_path) for _ in range(processes)]
        try:
            counts = await _wait_delivered(url, n, timeout_s=60 + n / 20)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                assert p.wait(timeout=60) == 0
        received = Counter(r for m in sink.messages for r in m.rcpt_tos)
    assert counts == {"delivered": n}
    assert len(received) == n  # zero losses
    assert max(received.values()) == 1  # zero duplicates


@pytest.mark.mysql
async def test_two_processes_share_mariadb_exactly_once(tmp_path: Path, mysql_url: str) -> None:
    await _empty(mysql_url)
    await _many_processes(tmp_path, mysql_url, 500, 2)


@pytest.mark.slow
@pytest.mark.mysql
async def test_three_processes_ten_thousand(tmp_path: Path, mysql_url: str) -> None:
    await _empty(mysql_url)
    await _many_processes(tmp_path, mysql_url, 10_000, 3)


async def _empty(url: str) -> None:
    from tests.conftest import _empty_tables

    await _empty_tables(url)


async def test_killed_worker_leases_expire_and_nothing_is_lost(tmp_path: Path, db_url: str) -> None:
    n = 40
    await _fill(db_url, n)
    async with RecordingServer() as sink:
        sink.data_delay_s = 0.3
        config = _config(tmp_path, db_url, sink.port, workers=4, batch_size=4, lease_time="2s")
        first = _serve(config, tmp_path)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(sink.messages) >= 5 and (await _counts(db_url)).get("sending", 0) > 0:
                break
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        mid = await _counts(db_url)
        assert mid.get("sending", 0) > 0  # it died holding leases
        second = _serve(config, tmp_path)
        try:
            counts = await _wait_delivered(db_url, n, timeout_s=60)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) == 0
        received = Counter(r for m in sink.messages for r in m.rcpt_tos)
    assert counts == {"delivered": n}
    assert len(received) == n
    # Only what was on the wire when the worker died can arrive twice (at-least-once).
    assert sum(received.values()) - n <= 4


def test_accounts_cli(tmp_path: Path, db_url: str) -> None:
    config = _config(tmp_path, db_url, 2525)
    (tmp_path / "relay.toml").write_text(
        config.read_text().replace('tls = "none"\n', 'tls = "none"\nwarmup = [50, 100]\n')
    )
    c = ("-c", str(config))
    listed = relay(*c, "accounts", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["name"] == "up" and row["limit_today"] == 50 and row["paused"] is False
    paused = relay(*c, "accounts", "pause", "up", "--for", "2h", cwd=tmp_path)
    assert paused.returncode == 0 and "paused until" in paused.stdout
    (row,) = json.loads(relay(*c, "accounts", "list", "--json", cwd=tmp_path).stdout)
    assert row["paused"] is True and row["paused_reason"] == "paused by operator"
    assert relay(*c, "accounts", "resume", "up", cwd=tmp_path).returncode == 0
    (row,) = json.loads(relay(*c, "accounts", "list", "--json", cwd=tmp_path).stdout)
    assert row["paused"] is False
    missing = relay(*c, "accounts", "resume", "nope", cwd=tmp_path)
    assert missing.returncode == 1 and "no account named 'nope'" in missing.stderr
    bad = relay(*c, "accounts", "pause", "up", "--for", "soon", cwd=tmp_path)
    assert bad.returncode == 2 and "--for" in bad.stderr
