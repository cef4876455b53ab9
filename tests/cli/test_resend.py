"""`relay queue retry ID --no-suppression`: a one-off resend past the suppression list.

A real `relay serve` process (SQLite and MariaDB) delivers to a loopback SMTP server. The
address is suppressed, so the first message is `suppressed` and never sent; the operator
resends it from the command line with `--no-suppression`; the running relay delivers that
one delivery, and the suppression list (and the next message to the address) stay as they were.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiosmtplib
from sqlalchemy import select

from relay.config import DatabaseConfig
from relay.store.db import Database
from relay.store.tables import deliveries
from tests.peers import RecordingServer
from tests.serving import Served, tenant_with_login, write_config
from tests.test_cli import relay


def _message(n: int) -> bytes:
    return (
        f"From: Shop <news@shop.example>\r\nTo: gone@example.net, ok@example.net\r\n"
        f"Subject: Invoice {n}\r\nMessage-ID: <inv{n}@shop.example>\r\n\r\nYour invoice.\r\n"
    ).encode()


async def _submit(port: int, login: tuple[str, str], n: int) -> None:
    app = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
    await app.connect()
    await app.login(*login)
    await app.sendmail("news@shop.example", ["gone@example.net", "ok@example.net"], _message(n))
    await app.quit()


async def _states(db_url: str) -> list[tuple[int, str, str, bool]]:
    db = Database.from_config(DatabaseConfig(url=db_url))
    try:
        async with db.read() as conn:
            rows = await conn.execute(
                select(
                    deliveries.c.message_id,
                    deliveries.c.recipient,
                    deliveries.c.state,
                    deliveries.c.no_suppression,
                ).order_by(deliveries.c.id)
            )
            return [(r[0], r[1], r[2], bool(r[3])) for r in rows]
    finally:
        await db.dispose()


async def _until_final(db_url: str, timeout_s: float = 30) -> list[tuple[int, str, str, bool]]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = await _states(db_url)
        if found and all(s not in ("queued", "sending", "deferred") for _, _, s, _ in found):
            return found
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.1)


async def test_resend_past_the_suppression_list(tmp_path: Path, db_url: str) -> None:
    login = await tenant_with_login(db_url)
    env = {"RELAY_DATABASE__URL": db_url}
    added = relay(
        "suppressions", "add", "gone@example.net", "--tenant", "shop", "--reason", "hard_bounce",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    async with RecordingServer() as mx:
        config = write_config(tmp_path, db_url, mx.port)
        served = Served(config, tmp_path)
        try:
            await served.ready()
            await _submit(served.smtp_port, login, 1)
            first = await _until_final(db_url)
            message_id = first[0][0]
            assert [(r, s) for _, r, s, _ in first] == [
                ("gone@example.net", "suppressed"),
                ("ok@example.net", "delivered"),
            ]
            assert [m.rcpt_tos for m in mx.messages] == [["ok@example.net"]]

            # Without the option, a suppressed delivery stays skipped.
            plain = relay("-c", str(config), "queue", "retry", str(message_id), "--json",
                          cwd=tmp_path)  # fmt: skip
            assert plain.returncode == 0, plain.stderr
            assert json.loads(plain.stdout) == {"requeued": 0}

            resend = relay(
                "-c", str(config), "queue", "retry", str(message_id), "--no-suppression",
                "--recipient", "Gone@Example.NET", "--json", cwd=tmp_path,
            )  # fmt: skip
            assert resend.returncode == 0, resend.stderr
            assert json.loads(resend.stdout) == {"requeued": 1, "no_suppression": True}
            after = await _until_final(db_url)
            assert after[0][2:] == ("delivered", True)
            assert [m.rcpt_tos for m in mx.messages] == [["ok@example.net"], ["gone@example.net"]]

            # The list is unchanged: the next message to the address is suppressed again.
            await _submit(served.smtp_port, login, 2)
            final = await _until_final(db_url)
            assert [(r, s, o) for _, r, s, o in final[2:]] == [
                ("gone@example.net", "suppressed", False),
                ("ok@example.net", "delivered", False),
            ]
            assert len(mx.messages) == 3
        finally:
            served.kill()
    listed = relay("suppressions", "list", "--tenant", "shop", "--json", cwd=tmp_path, env=env)
    assert [r["email"] for r in json.loads(listed.stdout)] == ["gone@example.net"]


def test_resend_bad_input(tmp_path: Path, db_url: str) -> None:
    env = {"RELAY_DATABASE__URL": db_url}
    both = relay("queue", "retry", "--all-deferred", "--no-suppression", cwd=tmp_path, env=env)
    assert both.returncode == 2 and "need a message id" in both.stderr
    bad = relay("queue", "retry", "1", "--recipient", "not an address", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "--recipient" in bad.stderr and "Traceback" not in bad.stderr
    missing = relay("queue", "retry", "4242", "--no-suppression", cwd=tmp_path, env=env)
    assert missing.returncode == 1 and "no message with id 4242" in missing.stderr
