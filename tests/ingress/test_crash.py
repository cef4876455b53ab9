"""Durability: `relay serve --role smtp` is SIGKILLed right after its 250; the message and
every delivery must already be in the database (SQLite and MariaDB)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiosmtplib
from sqlalchemy import select

from relay.store.db import Database
from relay.store.tables import deliveries, messages
from relay.store.tenants import add_credential, add_tenant
from tests.peers import free_port

RAW = (
    b"From: news@shop.example\r\nTo: a@example.org\r\nCc: b@example.org\r\n"
    b"Subject: crash\r\n\r\n" + b"body line\r\n" * 200
)


async def _wait_listening(port: int, proc: asyncio.subprocess.Process, deadline_s: float) -> None:
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        assert proc.returncode is None, "relay serve exited early"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("relay serve did not start listening")


async def test_sigkill_after_250_loses_nothing(db: Database, db_url: str, tmp_path: Path) -> None:
    tenant = await add_tenant(db, "shop")
    credential, password = await add_credential(db, tenant)
    port = free_port()
    env = dict(
        os.environ,
        RELAY_DATABASE__URL=db_url,
        RELAY_SMTP__LISTEN=f'["127.0.0.1:{port}"]',
        RELAY_LOG__LEVEL="warning",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "serve",
        "--role",
        "smtp",
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _wait_listening(port, proc, 30)
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
        await smtp.connect()
        await smtp.login(credential.username, password)
        recipients = ["a@example.org", "b@example.org", "c@example.org", "d@example.org"]
        _, reply = await smtp.sendmail("news@shop.example", recipients, RAW)
        proc.send_signal(signal.SIGKILL)  # no chance to flush anything after the 250
        await asyncio.wait_for(proc.wait(), 10)
        message_id = int(reply.rsplit(" ", 1)[1])
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)
    async with db.read() as conn:
        msg = (await conn.execute(select(messages).where(messages.c.id == message_id))).one()
        rows = (
            await conn.execute(select(deliveries).where(deliveries.c.message_id == message_id))
        ).all()
    assert msg.raw.endswith(b"body line\r\n" * 200)
    assert sorted(r.recipient for r in rows) == recipients
    assert {r.rcpt_type for r in rows} == {"to", "cc", "bcc"}
