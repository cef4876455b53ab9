"""FastSMTP against stock aiosmtpd, and the idle/command timeouts with a real client."""

from __future__ import annotations

import asyncio
import base64
import random

import pytest
from aiosmtpd.smtp import SMTP
from sqlalchemy import select

from relay.ingress import replies, server
from relay.ingress._session import has_long_line
from relay.ingress.handler import Handler, SubmissionSMTP
from relay.store.db import Database
from relay.store.tables import messages
from tests.ingress.conftest import Running, start_ingress


def _options(loop: asyncio.AbstractEventLoop) -> dict[str, object]:
    return {
        "hostname": "relay.test",
        "data_size_limit": 1000,
        "enable_SMTPUTF8": True,
        "decode_data": False,
        "tls_context": None,
        "timeout": 5.0,
        "auth_require_tls": False,
        "loop": loop,
    }


async def test_session_sets_what_stock_aiosmtpd_sets(ingress: Running) -> None:
    loop = asyncio.get_running_loop()
    ours = SubmissionSMTP(ingress.shared, **_options(loop))  # type: ignore[arg-type]
    stock = SMTP.__new__(SubmissionSMTP)
    SMTP.__init__(stock, Handler(ingress.shared), **_options(loop))  # type: ignore[arg-type]
    # Ours (accepted: message ids for the session log line; in_data: for the drain), plus
    # command_size_limits: per session instead of aiosmtpd's shared class dict.
    extra = {
        "shared",
        "identity",
        "peer_ip",
        "_counted",
        "accepted",
        "in_data",
        "command_size_limits",
    }
    assert set(vars(ours)) - extra == set(vars(stock))
    for name in ("_smtp_methods", "_handle_hooks", "_auth_methods"):
        assert sorted(getattr(ours, name)) == sorted(getattr(stock, name)), name
    assert ours._ehlo_hook_ver == stock._ehlo_hook_ver == "new"
    assert ours._smtp_methods["DATA"].__func__ is stock._smtp_methods["DATA"].__func__
    assert ours._smtp_methods["DATA"].__self__ is ours
    assert ours._auth_methods["PLAIN"].method.__func__ is SubmissionSMTP.auth_PLAIN


@pytest.mark.parametrize(
    "arg",
    [
        "<a@example.org>",
        "<a.b+c@sub.example.org> SIZE=100 BODY=8BITMIME",
        " <x@y.z>",
        '<"quoted local"@example.org>',
        "<@route:a@example.org>",
        "<zoë@example.org> SMTPUTF8",
        "a@example.org",
        "<>",
        "<a@b",
        "<a..b@example.org>",
        "<a@example.org>   (comment) SIZE=1",
        "<a@example.org>\tSIZE=1",
    ],
)
async def test_mail_argument_parsed_as_aiosmtpd_does(ingress: Running, arg: str) -> None:
    ours = SubmissionSMTP(ingress.shared, **_options(asyncio.get_running_loop()))  # type: ignore[arg-type]
    assert ours._getaddr(arg) == SMTP._getaddr(ours, arg)


def test_long_line_check_matches_splitting_into_lines() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        limit = rng.choice([1, 2, 3, 7, 998])
        lines = [b"x" * rng.choice([0, limit - 1, limit, limit + 1, rng.randint(0, 3 * limit)])]
        lines += [b"y" * rng.randint(0, 2 * limit) for _ in range(rng.randint(0, 5))]
        data = b"\r\n".join(lines) + rng.choice([b"", b"\r\n"])
        assert has_long_line(data, limit) == (max(map(len, data.split(b"\r\n"))) > limit)


async def _read_reply(reader: asyncio.StreamReader) -> str:
    lines = []
    while True:
        line = (await asyncio.wait_for(reader.readline(), 10)).decode().rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return "\n".join(lines)


async def test_idle_session_gets_421_and_is_closed(db: Database) -> None:
    running, servers = await start_ingress(db, idle_timeout=0.5, command_timeout=5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        assert (await _read_reply(reader)).startswith("220 ")
        writer.write(b"EHLO client.test\r\n")
        assert (await _read_reply(reader)).startswith("250")
        # Then silence: after idle_timeout the server says why and hangs up.
        assert await _read_reply(reader) == replies.TIMEOUT
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await server.stop(running.shared, servers, drain_s=1)


async def test_stalled_data_gets_421_after_command_timeout(db: Database) -> None:
    # The idle deadline is long; only the command deadline can end this session.
    running, servers = await start_ingress(db, idle_timeout=60, command_timeout=0.5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        await _read_reply(reader)
        auth = base64.b64encode(
            f"\0{running.credential.username}\0{running.password}".encode()
        ).decode()
        for command, code in [
            ("EHLO client.test", "250"),
            (f"AUTH PLAIN {auth}", "235"),
            ("MAIL FROM:<news@shop.example>", "250"),
            ("RCPT TO:<ann@example.org>", "250"),
            ("DATA", "354"),
        ]:
            writer.write(command.encode() + b"\r\n")
            assert (await _read_reply(reader)).startswith(code), command
        writer.write(b"From: news@shop.example\r\nSubject: half\r\n\r\nthe rest never ")
        started = asyncio.get_running_loop().time()
        assert await _read_reply(reader) == replies.TIMEOUT
        assert asyncio.get_running_loop().time() - started < 5
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        async with db.read() as conn:
            assert (await conn.execute(select(messages))).all() == []
    finally:
        await server.stop(running.shared, servers, drain_s=1)


async def test_slow_auth_answer_gets_421_after_command_timeout(db: Database) -> None:
    running, servers = await start_ingress(db, idle_timeout=60, command_timeout=0.5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        await _read_reply(reader)
        writer.write(b"EHLO client.test\r\nAUTH LOGIN\r\n")
        assert (await _read_reply(reader)).startswith("250")
        assert (await _read_reply(reader)).startswith("334 ")
        assert await _read_reply(reader) == replies.TIMEOUT
        writer.close()
    finally:
        await server.stop(running.shared, servers, drain_s=1)
