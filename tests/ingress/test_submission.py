"""Real clients (aiosmtplib, smtplib, swaks) against a running ingress on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import base64
import shutil
import smtplib
import subprocess
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from sqlalchemy import select

from relay.ingress import replies
from relay.store.suppressions import add as add_suppression
from relay.store.tables import campaigns, deliveries, inbound_reports, messages, recipients
from relay.store.tenants import set_credential
from tests.ingress.conftest import Running

RAW = (
    b"From: Shop <news@shop.example>\r\n"
    b"To: Ann <ann@example.org>\r\n"
    b"Cc: bob@Example.ORG\r\n"
    b"Bcc: secret@example.net\r\n"
    b"Subject: Hello\r\n"
    b"X-Campaign-ID: spring\r\n"
    b"X-Relay-Track: opens\r\n"
    b"Message-ID: <m1@shop.example>\r\n"
    b"\r\n"
    b"Body line.\r\n"
    b".leading dot\r\n"
)


async def client(running: Running, login: bool = True) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=running.port, timeout=10, start_tls=False)
    await smtp.connect()
    if login:
        await smtp.login(running.credential.username, running.password)
    return smtp


async def rows(running: Running, table, **where):  # type: ignore[no-untyped-def]
    query = select(table)
    for k, v in where.items():
        query = query.where(table.c[k] == v)
    async with running.db.read() as conn:
        return list((await conn.execute(query.order_by(table.c.id))).mappings())


async def test_auth_plain_stores_message_recipients_and_strips_headers(ingress: Running) -> None:
    smtp = await client(ingress)
    code, text = await smtp.sendmail(
        "news@shop.example",
        ["ann@example.org", "Bob@example.org", "secret@EXAMPLE.net"],
        RAW,
    )
    await smtp.quit()
    assert "2.0.0" in text
    (msg,) = await rows(ingress, messages)
    assert text.endswith(f"queued as {msg['id']}")
    assert msg["message_id_header"] == "<m1@shop.example>"
    assert msg["subject"] == "Hello"
    assert msg["options"] == {"track": "opens"}
    stored = msg["raw"]
    assert b"Bcc:" not in stored and b"X-Campaign-ID" not in stored and b"X-Relay" not in stored
    assert b"\r\n.leading dot\r\n" in stored  # stuffed by the client, unstuffed by us
    assert stored.endswith(b"\r\n\r\nBody line.\r\n.leading dot\r\n")
    dels = await rows(ingress, deliveries, message_id=msg["id"])
    tags = {d["recipient_key"]: (d["rcpt_type"], d["state"]) for d in dels}
    assert tags == {
        "ann@example.org": ("to", "queued"),
        "bob@example.org": ("cc", "queued"),
        "secret@example.net": ("bcc", "queued"),
    }
    assert {d["recipient"] for d in dels} >= {"Bob@example.org", "secret@example.net"}
    (camp,) = await rows(ingress, campaigns)
    assert camp["name"] == "spring" and msg["campaign_id"] == camp["id"]
    assert all(d["campaign_id"] == camp["id"] for d in dels)
    assert len(await rows(ingress, recipients)) == 3


class _RecordingSMTP(smtplib.SMTP):
    """smtplib, keeping every line it sends, so a test can see which AUTH went out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sent: list[bytes] = []
        super().__init__(*args, **kwargs)

    def send(self, s: str | bytes) -> None:
        self.sent.append(s.encode() if isinstance(s, str) else s)
        super().send(s)


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
async def test_auth_with_smtplib_and_message_id_added(ingress: Running, mechanism: str) -> None:
    def send() -> list[bytes]:
        with _RecordingSMTP("127.0.0.1", ingress.port, timeout=10) as s:
            s.ehlo()
            assert sorted(s.esmtp_features["auth"].split()) == ["LOGIN", "PLAIN"]
            for ext in ("size", "8bitmime", "smtputf8", "pipelining"):
                assert ext in s.esmtp_features
            # smtplib's login() would pick PLAIN; name the mechanism instead, and answer the
            # server's challenges (LOGIN: 334 Username:, 334 Password:) one by one.
            s.user, s.password = ingress.credential.username, ingress.password
            method = s.auth_login if mechanism == "LOGIN" else s.auth_plain
            code, _ = s.auth(mechanism, method, initial_response_ok=False)
            assert code == 235
            msg = EmailMessage()
            msg["From"] = "news@shop.example"
            msg["To"] = "zoë@example.org"
            msg["Subject"] = "Grüße"
            msg.set_content("8-bit body: ünïcödé\n", cte="8bit")
            s.send_message(msg, mail_options=["SMTPUTF8"])
            return s.sent

    sent = await asyncio.to_thread(send)
    auth = [line for line in sent if line.startswith(b"AUTH")]
    assert auth == [f"AUTH {mechanism}\r\n".encode()]
    if mechanism == "LOGIN":  # username and password each answer a 334 challenge
        i = sent.index(auth[0])
        assert sent[i + 1 : i + 3] == [
            base64.b64encode(v.encode()) + b"\r\n"
            for v in (ingress.credential.username, ingress.password)
        ]
    (msg,) = await rows(ingress, messages)
    assert msg["message_id_header"].endswith("@relay.test>")
    assert msg["raw"].startswith(b"Message-ID: " + msg["message_id_header"].encode())
    assert "ünïcödé".encode() in msg["raw"] and msg["smtputf8"]
    (d,) = await rows(ingress, deliveries)
    assert d["recipient"] == "zoë@example.org" and d["rcpt_type"] == "to"


async def test_campaign_reused_and_recipient_counts(ingress: Running) -> None:
    smtp = await client(ingress)
    for _ in range(2):
        await smtp.sendmail("news@shop.example", ["ann@example.org"], RAW)
    await smtp.quit()
    assert len(await rows(ingress, campaigns)) == 1
    (r,) = await rows(ingress, recipients)
    assert r["messages_count"] == 2


async def test_wrong_password_and_disabled_credential(ingress: Running) -> None:
    smtp = await client(ingress, login=False)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as e:
        await smtp.login(ingress.credential.username, "wrong")
    assert e.value.code == 535
    await smtp.quit()
    await set_credential(ingress.db, ingress.credential.username, disabled=True)
    smtp = await client(ingress, login=False)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as e:
        await smtp.login(ingress.credential.username, ingress.password)
    assert "disabled" in e.value.message
    await smtp.quit()


async def test_never_an_open_relay(ingress: Running) -> None:
    smtp = await client(ingress, login=False)
    await smtp.mail("someone@elsewhere.example")
    code, text = await smtp.execute_command(b"RCPT", b"TO:<victim@example.org>")
    assert f"{code} {text}" == replies.AUTH_REQUIRED
    # The bounce domain is open: inbound DSNs are stored for bounce processing.
    await smtp.rcpt("b-123@bounces.relay.test")
    code, _ = await smtp.data(b"Subject: dsn\r\n\r\nreport\r\n")
    await smtp.quit()
    assert code == 250
    (report,) = await rows(ingress, inbound_reports)
    assert report["rcpt"] == "b-123@bounces.relay.test" and report["matched"] is False
    assert await rows(ingress, messages) == []


async def test_sender_domain_policy(ingress: Running) -> None:
    smtp = await client(ingress)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
        await smtp.mail("ceo@other.example")
    assert e.value.code == 550 and "5.7.1" in e.value.message
    await smtp.rset()
    await smtp.mail("news@shop.example")
    await smtp.rcpt("ann@example.org")
    with pytest.raises(aiosmtplib.SMTPDataError) as d:
        await smtp.data(b"From: ceo@other.example\r\nTo: ann@example.org\r\n\r\nhi\r\n")
    assert d.value.code == 550 and "From header" in d.value.message
    await smtp.quit()
    assert await rows(ingress, messages) == []


async def test_limits(ingress: Running) -> None:
    config = ingress.shared.config
    smtp = await client(ingress)
    code, text = await smtp.execute_command(
        b"MAIL", f"FROM:<news@shop.example> SIZE={config.max_message_size + 1}".encode()
    )
    assert (code, text.split()[0]) == (552, "5.3.4")
    await smtp.mail("news@shop.example")
    code, text = await smtp.execute_command(b"RCPT", b"TO:<not an address>")
    assert code in (501, 553)
    code, text = await smtp.execute_command(b"RCPT", b"TO:<a@bad_domain>")
    assert (code, text.split()[0]) == (553, "5.1.3") and "domain" in text
    await smtp.rset()
    await smtp.mail("news@shop.example")
    await smtp.rcpt("ann@example.org")
    long_line = b"From: news@shop.example\r\n\r\n" + b"x" * (config.max_line_length + 1) + b"\r\n"
    with pytest.raises(aiosmtplib.SMTPDataError) as e:
        await smtp.data(long_line)
    assert e.value.code == 550 and "line longer" in e.value.message
    await smtp.quit()
    assert await rows(ingress, messages) == []


async def test_too_many_recipients_and_too_big(db) -> None:  # type: ignore[no-untyped-def]
    from relay.ingress import server
    from tests.ingress.conftest import start_ingress

    running, servers = await start_ingress(db, max_recipients=2, max_message_size=1000)
    try:
        smtp = await client(running)
        await smtp.mail("news@shop.example")
        await smtp.rcpt("a@example.org")
        await smtp.rcpt("b@example.org")
        code, text = await smtp.execute_command(b"RCPT", b"TO:<c@example.org>")
        assert f"{code} {text}" == replies.TOO_MANY_RECIPIENTS
        with pytest.raises(aiosmtplib.SMTPDataError) as e:
            await smtp.data(b"From: news@shop.example\r\n\r\n" + (b"y" * 70 + b"\r\n") * 30)
        assert e.value.code == 552 and "5.3.4" in e.value.message
        # The session stays usable after the refusal.
        await smtp.sendmail("news@shop.example", ["a@example.org"], b"Subject: s\r\n\r\nok\r\n")
        await smtp.quit()
        assert len(await rows(running, messages)) == 1
    finally:
        await server.stop(running.shared, servers, drain_s=1)


async def test_suppressed_and_held(ingress: Running) -> None:
    async with ingress.db.write() as conn:
        await add_suppression(conn, ingress.tenant.id, "ann@example.org", "hard_bounce")
    async with ingress.db.write() as conn:
        await conn.execute(
            campaigns.insert().values(
                tenant_id=ingress.tenant.id,
                name="paused-one",
                state="paused",
                settings={},
                created_at=__import__("relay.store.db").store.db.utcnow(),
            )
        )
    smtp = await client(ingress)
    await smtp.sendmail("news@shop.example", ["ann@example.org", "bob@example.org"], RAW)
    paused = RAW.replace(b"X-Campaign-ID: spring", b"X-Campaign-ID: paused-one")
    await smtp.sendmail("news@shop.example", ["carl@example.org"], paused)
    await smtp.quit()
    states = {d["recipient_key"]: d["state"] for d in await rows(ingress, deliveries)}
    assert states == {
        "ann@example.org": "suppressed",
        "bob@example.org": "queued",
        "carl@example.org": "held",
    }


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
async def test_swaks_as_in_readme(ingress: Running) -> None:
    args = [
        "swaks",
        "--server",
        f"127.0.0.1:{ingress.port}",
        "--auth",
        "PLAIN",
        "--auth-user",
        ingress.credential.username,
        "--auth-password",
        ingress.password,
        "--from",
        "news@shop.example",
        "--to",
        "ann@example.org",
        "--header",
        "X-Campaign-ID: welcome",
        "--body",
        "Hello from swaks",
    ]
    proc = await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (msg,) = await rows(ingress, messages)
    assert b"X-Campaign-ID" not in msg["raw"] and msg["campaign_id"] is not None
