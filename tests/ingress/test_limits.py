"""Limits issue 3 lists that test_submission.py does not reach: the header section size,
the total connection limit, a malformed MAIL FROM, and a message whose only recipient is Bcc."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest
from sqlalchemy import select

from relay.ingress import replies, server
from relay.store.db import Database
from relay.store.tables import deliveries, messages
from tests.ingress.conftest import start_ingress


async def login(port: int, username: str, password: str) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
    await smtp.connect()
    await smtp.login(username, password)
    return smtp


async def test_header_section_too_big_gets_552_and_session_goes_on(db: Database) -> None:
    running, servers = await start_ingress(db, max_header_size=1000)
    try:
        smtp = await login(running.port, running.credential.username, running.password)
        head = b"From: news@shop.example\r\n" + b"X-Filler: " + b"h" * 70 + b"\r\n"
        big = b"From: news@shop.example\r\n" + b"".join(
            b"X-Filler-%d: %s\r\n" % (i, b"h" * 60) for i in range(20)
        )
        assert len(big) > 1000
        await smtp.mail("news@shop.example")
        await smtp.rcpt("ann@example.org")
        with pytest.raises(aiosmtplib.SMTPDataError) as e:
            await smtp.data(big + b"\r\nshort body\r\n")
        assert f"{e.value.code} {e.value.message}" == replies.HEADER_TOO_BIG.format(limit=1000)
        # The same body behind a small header is fine: only the header section counts.
        await smtp.sendmail(
            "news@shop.example", ["ann@example.org"], head + b"\r\n" + (b"b" * 70 + b"\r\n") * 40
        )
        await smtp.quit()
        async with db.read() as conn:
            assert len((await conn.execute(select(messages))).all()) == 1
    finally:
        await server.stop(running.shared, servers, drain_s=1)


async def test_total_connection_limit_gets_421(db: Database) -> None:
    running, servers = await start_ingress(db, max_connections=2)
    try:
        first = await login(running.port, running.credential.username, running.password)
        second = await login(running.port, running.credential.username, running.password)
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        line = await asyncio.wait_for(reader.readline(), 10)
        assert line.decode().strip() == replies.TOO_MANY_CONNECTIONS
        assert await asyncio.wait_for(reader.read(), 10) == b""  # and closed
        writer.close()
        await first.quit()
        # A slot is free again once a session ends.
        for _ in range(50):
            if running.shared.total < 2:
                break
            await asyncio.sleep(0.05)
        third = await login(running.port, running.credential.username, running.password)
        await third.sendmail("news@shop.example", ["ann@example.org"], b"Subject: s\r\n\r\nok\r\n")
        await third.quit()
        await second.quit()
    finally:
        await server.stop(running.shared, servers, drain_s=1)


async def test_malformed_mail_from_gets_501(db: Database) -> None:
    running, servers = await start_ingress(db)
    try:
        smtp = await login(running.port, running.credential.username, running.password)
        code, text = await smtp.execute_command(b"MAIL", b"FROM:<news@bad_domain>")
        assert (code, text.split()[0]) == (501, "5.1.7") and "domain" in text
        await smtp.quit()
    finally:
        await server.stop(running.shared, servers, drain_s=1)


async def test_bcc_only_message_keeps_its_recipient_and_drops_the_header(db: Database) -> None:
    running, servers = await start_ingress(db)
    try:
        smtp = await login(running.port, running.credential.username, running.password)
        raw = (
            b"From: news@shop.example\r\nBcc: hidden@example.org\r\n"
            b"Subject: only bcc\r\n\r\nbody\r\n"
        )
        await smtp.sendmail("news@shop.example", ["hidden@example.org"], raw)
        await smtp.quit()
        async with db.read() as conn:
            (msg,) = (await conn.execute(select(messages))).mappings().all()
            (d,) = (await conn.execute(select(deliveries))).mappings().all()
        assert b"Bcc:" not in msg["raw"] and b"hidden@" not in msg["raw"]
        found = (d["recipient"], d["rcpt_type"], d["state"])
        assert found == ("hidden@example.org", "bcc", "queued")
    finally:
        await server.stop(running.shared, servers, drain_s=1)
