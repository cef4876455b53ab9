"""A hard bounce end to end, over real SMTP on loopback, on SQLite and MariaDB.

An app submits over SMTP to relay's ingress; the scheduler delivers through a real SMTP
server that accepts; that server's MTA then mails a DSN back to the VERP address over SMTP,
to relay's ingress, without AUTH. The delivery becomes `bounced` and the address suppressed;
a message queued before the bounce is skipped before sending, one submitted after it is
`suppressed` at intake, and neither reaches the server.
"""

from __future__ import annotations

import random
from pathlib import Path

import aiosmtplib
from sqlalchemy import select

from relay import config as config_module
from relay.ingress import replies, server
from relay.rendering import DeliveryRenderer
from relay.scheduler import Scheduler
from relay.store import suppressions, tenants
from relay.store.db import Database
from relay.store.tables import deliveries, inbound_reports
from relay.transport.pool import SmarthostPool
from tests.ingress.conftest import start_ingress
from tests.peers import RecordingServer, free_port


def message(n: int) -> bytes:
    return (
        f"From: Shop <news@shop.example>\r\nTo: gone@example.net\r\nSubject: Hello {n}\r\n"
        f"Message-ID: <m{n}@shop.example>\r\n\r\nHello.\r\n"
    ).encode()


def dsn(verp: str, recipient: str, original_id: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.net\r\n"
        f"To: {verp}\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nI could not deliver your message.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: "
        "User unknown in local recipient table\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {original_id}\r\nSubject: Hello\r\n\r\n--B--\r\n"
    ).encode()


async def _states(db: Database) -> list[tuple[str, str, str | None]]:
    async with db.read() as conn:
        rows = await conn.execute(
            select(deliveries.c.recipient, deliveries.c.state, deliveries.c.bounce_reason).order_by(
                deliveries.c.id
            )
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def _config(tmp_path: Path, port: int, mx_port: int) -> config_module.Config:
    """Ingress on `port` with a VERP bounce domain, delivering to the recording MX."""
    return config_module.load(
        None,
        env={
            "RELAY_DATA_DIR": str(tmp_path),
            "RELAY_SMTP__LISTEN": f'["127.0.0.1:{port}"]',
            "RELAY_SMTP__HOSTNAME": "relay.test",
            "RELAY_BOUNCE__DOMAIN": "bounces.relay.test",
            "RELAY_DELIVERY__MODE": "smarthost",
            "RELAY_DELIVERY__ACCOUNTS": (
                f'[{{"name": "mx", "host": "127.0.0.1", "port": {mx_port}, "tls": "none"}}]'
            ),
        },
    )


async def test_dsn_over_smtp_bounces_and_suppresses(db: Database, tmp_path: Path) -> None:
    async with RecordingServer() as mx:
        port = free_port()
        cfg = _config(tmp_path, port, mx.port)
        tenant = await tenants.add_tenant(db, "shop", ["shop.example"])
        credential, password = await tenants.add_credential(db, tenant)
        shared, servers = await server.start(cfg, db)
        transport = SmarthostPool(cfg.delivery, "relay.test", rng=random.Random(1))
        scheduler = Scheduler(
            cfg, db, transport, render=DeliveryRenderer(cfg, db), rng=random.Random(1), owner="w1"
        )

        async def submit(n: int) -> str:
            app = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
            await app.connect()
            await app.login(credential.username, password)
            _, text = await app.sendmail("news@shop.example", ["gone@example.net"], message(n))
            await app.quit()
            return text

        try:
            await submit(1)
            await scheduler.run_until_idle()
            assert len(mx.messages) == 1
            verp = mx.messages[0].mail_from
            assert verp.startswith("bounces+") and verp.endswith("@bounces.relay.test")
            await submit(2)  # queued before the bounce comes back

            # The remote MTA bounces message 1 to its VERP address: no AUTH, null sender.
            remote = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
            await remote.connect()
            code, _ = await remote.sendmail(
                "", [verp], dsn(verp, "gone@example.net", "<m1@shop.example>")
            )
            await remote.quit()
            assert code == {}  # no recipient refused

            async with db.read() as conn:
                found = await suppressions.suppressed_among(conn, tenant.id, ["gone@example.net"])
                (report,) = (await conn.execute(select(inbound_reports))).mappings()
            assert found == {"gone@example.net": "hard_bounce"}
            assert report["matched"] is True

            await submit(3)  # after the bounce: suppressed at intake
            await scheduler.run_until_idle()  # message 2: skipped before sending
        finally:
            await transport.close()
            await server.stop(shared, servers, drain_s=1)
        assert len(mx.messages) == 1  # neither later message reached the server
    assert await _states(db) == [
        ("gone@example.net", "bounced", "userunknown"),
        ("gone@example.net", "suppressed", None),
        ("gone@example.net", "suppressed", None),
    ]


async def test_null_sender_only_for_the_bounce_domain(db: Database) -> None:
    running, servers = await start_ingress(db)
    try:
        remote = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=running.port, timeout=10, start_tls=False
        )
        await remote.connect()
        await remote.ehlo()
        code, _ = await remote.execute_command(b"MAIL", b"FROM:<>")
        assert code == 250
        code, text = await remote.execute_command(b"RCPT", b"TO:<victim@example.org>")
        assert f"{code} {text}" == replies.AUTH_REQUIRED  # never an open relay
        code, _ = await remote.execute_command(b"RCPT", b"TO:<bounces+x@bounces.relay.test>")
        assert code == 250
        await remote.quit()
    finally:
        await server.stop(running.shared, servers, drain_s=1)


async def test_mailto_unsubscribe_over_smtp(db: Database, tmp_path: Path) -> None:
    """The List-Unsubscribe mailto: address of a delivered message, mailed over SMTP (as Apple
    Mail and others do, RFC 2369), unsubscribes that recipient; the next message is skipped."""
    async with RecordingServer() as mx:
        port = free_port()
        cfg = _config(tmp_path, port, mx.port)
        tenant = await tenants.add_tenant(db, "shop", ["shop.example"])
        credential, password = await tenants.add_credential(db, tenant)
        shared, servers = await server.start(cfg, db)
        transport = SmarthostPool(cfg.delivery, "relay.test", rng=random.Random(1))
        scheduler = Scheduler(
            cfg, db, transport, render=DeliveryRenderer(cfg, db), rng=random.Random(1), owner="w1"
        )

        async def submit(n: int) -> None:
            app = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
            await app.connect()
            await app.login(credential.username, password)
            await app.sendmail("news@shop.example", ["gone@example.net"], message(n))
            await app.quit()

        try:
            await submit(1)
            await scheduler.run_until_idle()
            (sent,) = mx.messages
            header = sent.data.decode().split("\r\n\r\n")[0].replace("\r\n ", " ")
            mailto = header.split("<mailto:")[1].split(">")[0]
            assert mailto.startswith("bounces+unsub-") and mailto.endswith("@bounces.relay.test")
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
            await client.connect()
            request = (
                f"From: gone@example.net\r\nTo: {mailto}\r\nSubject: unsubscribe\r\n"
                "Auto-Submitted: auto-replied\r\n\r\nunsubscribe\r\n"
            ).encode()
            refused, _ = await client.sendmail("gone@example.net", [mailto], request)
            await client.quit()
            assert refused == {}
            async with db.read() as conn:
                found = await suppressions.suppressed_among(conn, tenant.id, ["gone@example.net"])
                (report,) = (await conn.execute(select(inbound_reports))).mappings()
            assert found == {"gone@example.net": "unsubscribe"}
            assert report["matched"] is True and report["kind"] == "unsubscribe"
            await submit(2)
            await scheduler.run_until_idle()
        finally:
            await transport.close()
            await server.stop(shared, servers, drain_s=1)
        assert len(mx.messages) == 1
    assert [s for _, s, _ in await _states(db)] == ["delivered", "suppressed"]
