"""Inbound reports to the VERP domain: matching to deliveries and their effects, both DBs."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from relay.config import BounceConfig
from relay.inbound import process, replay, verp_token
from relay.render.tokens import Keyring, TokenData, TokenKind
from relay.store import reports, suppressions, webhooks
from relay.store.db import Database, utcnow
from relay.store.tables import (
    deliveries,
    inbound_reports,
    recipient_events,
    recipients,
    stat_counters,
    webhook_deliveries,
)
from tests import rows

KEYRING = Keyring(b"0123456789abcdef-test-secret")
CONFIG = BounceConfig(domain="bounce.relay.example", soft_bounce_limit=2)


def verp(delivery_id: int) -> str:
    token = KEYRING.sign(TokenData(TokenKind.BOUNCE, delivery_id))
    return f"bounces+{token}@bounce.relay.example"


def dsn(
    recipient: str,
    status: str,
    diagnostic: str,
    message_id: str = "<m1@shop.example>",
    action: str = "failed",
) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.net\r\nTo: whoever@relay.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {message_id}\r\nSubject: Hello\r\n\r\n--B--\r\n"
    ).encode()


ARF = (
    b"From: feedback@isp.example\r\nTo: fbl@relay.example\r\nSubject: FW: Hello\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n\r\n'
    b"--F\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
    b"--F\r\nContent-Type: message/feedback-report\r\n\r\n"
    b"Feedback-Type: abuse\r\nUser-Agent: isp/1.0\r\nVersion: 1\r\n"
    b"Original-Rcpt-To: fan@example.com\r\n\r\n"
    b"--F\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: news@shop.example\r\nTo: fan@example.com\r\nMessage-ID: <m1@shop.example>\r\n"
    b"Subject: Hello\r\n\r\nhi\r\n--F--\r\n"
)


async def _delivery(db: Database, recipient: str) -> tuple[int, int]:
    tenant = await rows.tenant(db)
    message = await rows.message(db, tenant)
    return tenant, await rows.delivery(db, message, recipient=recipient, state="delivered")


async def _state(db: Database, delivery_id: int) -> tuple[str, str | None, str | None]:
    async with db.read() as conn:
        row = (await conn.execute(select(deliveries).where(deliveries.c.id == delivery_id))).one()
    return row.state, row.bounce_kind, row.bounce_reason


def test_verp_token_only_on_the_bounce_domain() -> None:
    assert verp_token("bounces+abc123@Bounce.Relay.Example", CONFIG) == "abc123"
    assert verp_token("<bounces+abc123@bounce.relay.example>", CONFIG) == "abc123"
    assert verp_token("bounces+abc123@other.example", CONFIG) is None
    assert verp_token("someone@bounce.relay.example", CONFIG) is None
    assert verp_token("bounces+x@bounce.relay.example", BounceConfig()) is None


async def test_hard_bounce_by_verp_suppresses(db: Database) -> None:
    tenant, did = await _delivery(db, "gone@example.net")
    raw = dsn(
        "gone@example.net",
        "5.1.1",
        "550 5.1.1 <gone@example.net>: User unknown",
        message_id="<other@x>",
    )  # the token alone must be enough
    result = await process(db, KEYRING, CONFIG, raw, [verp(did)])
    assert [(a.delivery_id, a.matched_by, a.kind, a.suppressed) for a in result.applied] == [
        (did, "verp", "hard", "hard_bounce")
    ]
    assert await _state(db, did) == ("bounced", "hard", "userunknown")
    async with db.read() as conn:
        found = await suppressions.suppressed_among(conn, tenant, ["gone@example.net"])
        event = (await conn.execute(select(recipient_events))).one()
        counts = (await conn.execute(select(recipients))).one()
        (row,) = await suppressions.list_page(conn)
    assert found == {"gone@example.net": "hard_bounce"}
    assert event.type == "bounced" and event.detail["status"] == "5.1.1"
    assert counts.hard_bounce_count == 1
    assert row.expires_at is not None  # hard bounces expire (90 days by default)


async def test_policy_block_fails_but_does_not_suppress(db: Database) -> None:
    tenant, did = await _delivery(db, "fine@example.net")
    raw = dsn(
        "fine@example.net",
        "5.7.1",
        "550 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.spamhaus.org",
    )
    result = await process(db, KEYRING, CONFIG, raw, [verp(did)])
    assert [(a.kind, a.reason, a.suppressed) for a in result.applied] == [("soft", "blocked", None)]
    assert await _state(db, did) == ("failed", "soft", "blocked")
    async with db.read() as conn:
        assert await suppressions.suppressed_among(conn, tenant, ["fine@example.net"]) == {}


async def test_policy_blocks_charge_the_account_and_never_escalate(db: Database) -> None:
    from relay.store import accounts

    await accounts.ensure(db, ["primary"], utcnow())
    tenant = await rows.tenant(db)
    message = await rows.message(db, tenant)
    blocked = "550 5.7.1 Message rejected as spam"
    ids = [
        await rows.delivery(
            db, message, recipient="fine@example.net", state="delivered", account=account
        )
        for account in ("primary", "primary", "mx.example.net")  # the last: direct delivery
    ]
    for did in ids:  # more than soft_bounce_limit (2) blocks: still not the address's fault
        result = await process(db, KEYRING, CONFIG, dsn("fine@example.net", "5.7.1", blocked),
                               [verp(did)])  # fmt: skip
        assert [(a.reason, a.suppressed) for a in result.applied] == [("spamdetected", None)]
    async with db.read() as conn:
        assert await suppressions.suppressed_among(conn, tenant, ["fine@example.net"]) == {}
    (row,) = await accounts.read_all(db, utcnow())
    assert (row.name, row.window_sent, row.window_bounced) == ("primary", 0, 2)


async def test_repeated_soft_bounces_escalate(db: Database) -> None:
    tenant, first = await _delivery(db, "full@example.net")
    message = await rows.message(db, tenant)
    second = await rows.delivery(db, message, recipient="full@example.net", state="delivered")
    raw = dsn("full@example.net", "5.2.2", "552 5.2.2 Mailbox full")
    one = await process(db, KEYRING, CONFIG, raw, [verp(first)])
    assert one.applied[0].suppressed is None
    two = await process(db, KEYRING, CONFIG, raw, [verp(second)])
    assert two.applied[0].suppressed == "soft_bounce"
    # Outside the window the old bounce no longer counts.
    later = utcnow() + timedelta(seconds=CONFIG.soft_bounce_window + 60)
    _, third = await _delivery(db, "full2@example.net")
    three = await process(
        db, KEYRING, CONFIG, dsn("full2@example.net", "5.2.2", "552 full"), [verp(third)], now=later
    )
    assert three.applied[0].suppressed is None


async def test_bad_token_falls_back_to_message_id(db: Database) -> None:
    tenant, did = await _delivery(db, "Gone@Example.NET")
    raw = dsn("gone@example.net", "5.1.1", "550 5.1.1 user unknown")
    forged = "bounces+AAAAAAAAAAAAAAAAAAAA@bounce.relay.example"
    result = await process(db, KEYRING, CONFIG, raw, [forged])
    assert [(a.delivery_id, a.matched_by) for a in result.applied] == [(did, "message_id")]


async def test_unmatched_is_reported_not_dropped(db: Database) -> None:
    await _delivery(db, "someone@example.com")
    raw = dsn("stranger@example.org", "5.1.1", "550 5.1.1 user unknown", message_id="<nope@x>")
    result = await process(db, KEYRING, CONFIG, raw, ["postmaster@bounce.relay.example"])
    assert not result.matched
    assert [u.recipient for u in result.unmatched] == ["stranger@example.org"]
    async with db.read() as conn:
        assert await suppressions.list_page(conn) == []


async def test_complaint_suppresses_forever(db: Database) -> None:
    tenant, did = await _delivery(db, "fan@example.com")
    result = await process(db, KEYRING, CONFIG, ARF, [verp(did)])
    assert [(a.kind, a.suppressed) for a in result.applied] == [("complaint", "complaint")]
    async with db.read() as conn:
        (row,) = await suppressions.list_page(conn)
        event = (await conn.execute(select(recipient_events))).one()
    assert (row.reason, row.expires_at) == ("complaint", None)
    assert event.type == "complained"
    assert await _state(db, did) == ("delivered", None, None)  # the mail was delivered


async def test_auto_reply_changes_nothing(db: Database) -> None:
    _, did = await _delivery(db, "away@example.com")
    raw = (
        b"From: away@example.com\r\nTo: x@y.example\r\nSubject: Out of office\r\n"
        b"Auto-Submitted: auto-replied\r\n\r\nBack on Monday.\r\n"
    )
    result = await process(db, KEYRING, CONFIG, raw, [verp(did)])
    assert result.report.type == "autoreply" and not result.applied and not result.unmatched
    assert await _state(db, did) == ("delivered", None, None)


async def test_reports_raise_webhook_events_and_stats(db: Database) -> None:
    tenant, did = await _delivery(db, "gone@example.net")
    message = await rows.message(db, tenant)
    fan = await rows.delivery(db, message, recipient="fan@example.com", state="delivered")
    full = await rows.delivery(db, message, recipient="full@example.net", state="delivered")
    async with db.write() as conn:
        await webhooks.create(conn, tenant, "https://hooks.example/relay", [])
    await process(
        db, KEYRING, CONFIG, dsn("gone@example.net", "5.1.1", "550 5.1.1 unknown"), [verp(did)]
    )
    await process(db, KEYRING, CONFIG, ARF, [verp(fan)])
    await process(
        db, KEYRING, CONFIG, dsn("full@example.net", "5.2.2", "552 5.2.2 full"), [verp(full)]
    )
    async with db.read() as conn:
        events = [r.event for r in await conn.execute(select(webhook_deliveries))]
        counts = {
            r.metric: r.count
            for r in await conn.execute(
                select(stat_counters).where(stat_counters.c.tenant_id == tenant)
            )
        }
        final_at = (
            await conn.execute(select(deliveries.c.final_at).where(deliveries.c.id == did))
        ).scalar()
    by_type = {e["type"]: e for e in events}
    assert set(by_type) == {"bounced", "complained", "failed"}
    bounced = by_type["bounced"]["data"]
    assert (bounced["delivery_id"], bounced["kind"], bounced["reason"], bounced["enhanced"]) == (
        did,
        "hard",
        "userunknown",
        "5.1.1",
    )
    assert by_type["complained"]["data"]["recipient"] == "fan@example.com"
    assert by_type["failed"]["data"]["reason"] == "mailboxfull"
    assert counts == {"bounced_hard": 1, "complained": 1, "bounced_soft": 1}
    assert final_at is not None


async def test_replay_finishes_what_a_failure_left(db: Database) -> None:
    # A report stored before the 250 whose processing never ran (e.g. the database went away).
    tenant, did = await _delivery(db, "gone@example.net")
    async with db.write() as conn:
        report_id = await reports.store_inbound(
            conn, verp(did), "", dsn("gone@example.net", "5.1.1", "550 5.1.1 unknown")
        )
    (done,) = await replay(db, KEYRING, CONFIG)
    assert done[0] == report_id and done[1] is not None
    assert [a.delivery_id for a in done[1].applied] == [did]
    assert await _state(db, did) == ("bounced", "hard", "userunknown")
    assert await replay(db, KEYRING, CONFIG) == []  # processed: not again
    async with db.read() as conn:
        row = (await conn.execute(select(inbound_reports))).mappings().one()
    assert (row["matched"], row["kind"]) == (True, "hard")
