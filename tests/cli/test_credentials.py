"""`relay credentials set LOGIN --hold on|off --allow-no-suppression on|off`, as an operator
runs it, against a running ingress: the next session of that login has its mail held (or
not) and may (or may not) bypass the suppression list. Bad input is one line, exit 2/1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from sqlalchemy import select

from relay.store.suppressions import add as add_suppression
from relay.store.tables import deliveries
from tests.ingress.conftest import Running
from tests.test_cli import relay

RAW = (
    b"From: Shop <news@shop.example>\r\n"
    b"To: ann@example.org\r\n"
    b"Subject: Hello\r\n"
    b"Message-ID: <m1@shop.example>\r\n"
    b"X-Relay-No-Suppression: 1\r\n"
    b"\r\n"
    b"Body.\r\n"
)


async def _send(running: Running, recipient: str) -> str:
    """Submit one message in a new session; returns its delivery's state."""
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=running.port, timeout=10)
    await smtp.connect()
    await smtp.login(running.credential.username, running.password)
    await smtp.sendmail("news@shop.example", [recipient], RAW)
    await smtp.quit()
    async with running.db.read() as conn:
        query = select(deliveries.c.state).where(deliveries.c.recipient == recipient)
        return str((await conn.execute(query)).scalar_one())


async def test_set_hold_and_suppression_bypass(
    ingress: Running, db_url: str, tmp_path: Path
) -> None:
    login = ingress.credential.username
    config = tmp_path / "relay.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n')
    async with ingress.db.write() as conn:
        for who in ("a", "b", "c", "d"):
            await add_suppression(conn, ingress.tenant.id, f"{who}@example.org", "hard_bounce")

    def run(*args: str) -> Any:
        out = relay("-c", str(config), "credentials", "set", login, *args, "--json", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    assert await _send(ingress, "a@example.org") == "suppressed"  # created without either

    record = run("--hold", "on", "--allow-no-suppression", "on")
    assert record["username"] == login and record["tenant"] == "shop"
    assert record["hold"] is True and record["allow_no_suppression"] is True
    assert await _send(ingress, "b@example.org") == "held"  # and let past the suppression

    assert run("--hold", "off")["hold"] is False
    assert await _send(ingress, "c@example.org") == "queued"

    record = run("--allow-no-suppression", "off")
    assert record["allow_no_suppression"] is False and record["hold"] is False
    assert await _send(ingress, "d@example.org") == "suppressed"

    listed = relay("-c", str(config), "credentials", "list", "--json", cwd=tmp_path)
    assert json.loads(listed.stdout)[0]["hold"] is False


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["LOGIN", "--hold", "maybe"], 2, "argument --hold: invalid choice: 'maybe'"),
        (["LOGIN", "--allow-no-suppression", "yes"], 2, "argument --allow-no-suppression"),
        (["LOGIN"], 2, "give --hold on|off and/or --allow-no-suppression on|off"),
        (["nobody", "--hold", "on"], 1, "no SMTP credential with username 'nobody'"),
    ],
)
async def test_bad_input_is_one_line(
    ingress: Running, db_url: str, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n')
    args = [ingress.credential.username if a == "LOGIN" else a for a in args]
    out = relay("-c", str(config), "credentials", "set", *args, cwd=tmp_path)
    assert out.returncode == code and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
