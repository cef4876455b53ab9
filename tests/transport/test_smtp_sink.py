"""Delivery into Postfix's `smtp-sink`, an SMTP server that is not ours and advertises
PIPELINING: every message arrives once with its own envelope, and smtp-sink's scripted
refusals (RCPT 5xx, DATA 4xx before the message) become the right delivery states."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from relay.store.db import Database
from tests.peers import free_port
from tests.test_scheduler import Clock, _deliveries, _queue, scheduler, smarthost_config

SINK = shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin")


@asynccontextmanager
async def smtp_sink(dump: Path, *flags: str) -> AsyncIterator[int]:
    if SINK is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("Debian's postfix (smtp-sink) is required under CI")
        pytest.skip("postfix (smtp-sink) not installed")
    port = free_port()
    user = ["-u", "root"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(  # noqa: ASYNC220 - a short-lived peer, started once
        [SINK, *user, "-d", f"{dump}/m.", *flags, f"127.0.0.1:{port}", "100"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):  # until it listens
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _dumped(dump: Path) -> list[str]:
    """X-Rcpt-Args of every transaction smtp-sink wrote out."""
    found = []
    for path in dump.iterdir():
        head = path.read_bytes().split(b"\n\n", 1)[0].decode()
        found += [line.split(": ", 1)[1] for line in head.splitlines() if line.startswith("X-Rcpt")]
    return found


async def test_every_message_once_through_smtp_sink(db: Database, tmp_path: Path) -> None:
    recipients = [f"user{i}@example.com" for i in range(30)]
    await _queue(db, *recipients)
    (tmp_path / "dump").mkdir()
    async with smtp_sink(tmp_path / "dump") as port:
        s = scheduler(smarthost_config(port, workers=5), db, Clock())
        await s.run_until_idle()
        await s.transport.close()
    assert {r.state for r in (await _deliveries(db)).values()} == {"delivered"}
    assert sorted(_dumped(tmp_path / "dump")) == sorted(f"<{r}>" for r in recipients)


@pytest.mark.parametrize(
    ("flag", "state", "code"),
    [("-f", "bounced", 5), ("-r", "deferred", 4)],
    ids=["rcpt-hard", "data-soft"],
)
async def test_smtp_sink_refusals(
    db: Database, tmp_path: Path, flag: str, state: str, code: int
) -> None:
    await _queue(db, "a@example.com", "b@example.com")
    # RCPT refused 5xx with a no-such-user reply / the DATA command refused 4xx.
    script = ["-B", "550 5.1.1 No such user", "-f", "rcpt"] if flag == "-f" else ["-r", "data"]
    (tmp_path / "dump").mkdir()
    async with smtp_sink(tmp_path / "dump", *script) as port:
        s = scheduler(smarthost_config(port, workers=1), db, Clock())
        await s.run_until_idle()
        await s.transport.close()
    rows = await _deliveries(db)
    assert {r.state for r in rows.values()} == {state}
    assert {r.last_reply_code // 100 for r in rows.values()} == {code}
    assert _dumped(tmp_path / "dump") == []
