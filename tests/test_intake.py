"""Intake on a real database: header stripping, send-at, holds, suppression override."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select

from relay.intake import Intake, Rejected, Settings, parse_send_at, strip_headers
from relay.store.db import Database
from relay.store.suppressions import add as add_suppression
from relay.store.tables import deliveries, messages
from relay.store.tenants import add_credential, add_tenant

RAW = (
    b"From: news@shop.example\r\n"
    b"To: a@example.org\r\n"
    b"X-Relay-Send-At: 2030-01-02T03:04:05+01:00\r\n"
    b"X-Relay-No-Suppression: 1\r\n"
    b"Subject: folded\r\n"
    b" continuation\r\n"
    b"BCC: hidden@example.org,\r\n"
    b"\tmore@example.org\r\n"
    b"\r\n"
    b"X-Relay-Track: this is body text, not a header\r\n"
)


def test_strip_headers_edits_only_the_header_bytes() -> None:
    out = strip_headers(RAW, {"bcc"}, "x-relay-")
    assert out == (
        b"From: news@shop.example\r\nTo: a@example.org\r\n"
        b"Subject: folded\r\n continuation\r\n\r\n"
        b"X-Relay-Track: this is body text, not a header\r\n"
    )


def test_parse_send_at_forms() -> None:
    assert parse_send_at("2030-01-02T03:04:05+01:00") == datetime(2030, 1, 2, 2, 4, 5)
    assert parse_send_at("Wed, 02 Jan 2030 03:04:05 +0000") == datetime(2030, 1, 2, 3, 4, 5)
    with pytest.raises(Rejected) as e:
        parse_send_at("next tuesday")
    assert e.value.reply.startswith("550 5.6.0")


async def test_send_at_hold_and_suppression_override(db: Database) -> None:
    tenant = await add_tenant(db, "shop", hold=True)
    allowed, _ = await add_credential(db, tenant, allow_no_suppression=True)
    plain, _ = await add_credential(db, tenant)
    async with db.write() as conn:
        await add_suppression(conn, tenant.id, "a@example.org", "hard_bounce")
    intake = Intake(db, Settings("relay.test"))
    try:
        first = await intake.submit(tenant, allowed, "news@shop.example", ["a@example.org"], RAW)
        second = await intake.submit(tenant, plain, "news@shop.example", ["A@Example.org"], RAW)
    finally:
        await intake.close()
    assert first.states == {"a@example.org": "held"}  # override honoured, tenant on hold
    assert second.states == {"a@example.org": "suppressed"}  # this credential may not override
    async with db.read() as conn:
        mid = first.message_id
        row = (await conn.execute(select(messages).where(messages.c.id == mid))).one()
        d = (await conn.execute(select(deliveries).where(deliveries.c.message_id == mid))).one()
        other = (
            await conn.execute(
                select(deliveries.c.no_suppression).where(
                    deliveries.c.message_id == second.message_id
                )
            )
        ).scalar_one()
    assert row.options == {"send_at": "2030-01-02T03:04:05+01:00", "no_suppression": "1"}
    # Kept on the delivery, so the scheduler's pre-send check honours it too; the header
    # from a credential without the right is stored in options but overrides nothing.
    assert d.no_suppression is True and other is False
    assert d.next_attempt_at == datetime(2030, 1, 2, 2, 4, 5)
    assert b"hidden@example.org" not in row.raw and b"X-Relay-Send-At" not in row.raw


async def test_concurrent_submissions_share_commits(db: Database) -> None:
    import asyncio

    tenant = await add_tenant(db, "shop")
    intake = Intake(db, Settings("relay.test"))
    raw = b"From: news@shop.example\r\nTo: a@example.org\r\n\r\nhi\r\n"
    try:
        results = await asyncio.gather(
            *(intake.submit(tenant, None, "", [f"r{i}@example.org"], raw) for i in range(50))
        )
        commits = intake.committer.commits
    finally:
        await intake.close()
    assert len({r.message_id for r in results}) == 50
    assert commits < 50  # group commit: several messages per transaction
    async with db.read() as conn:
        assert len((await conn.execute(select(deliveries))).all()) == 50


async def test_header_fields_decoded_and_tagged_without_a_full_parse(db: Database) -> None:
    from relay.intake import may_hold_links

    tenant = await add_tenant(db, "shop")
    raw = (
        "From: =?utf-8?q?J=C3=B6rg?= <news@shop.example>\r\n"
        'To: "Doe, Ann" <ann@example.org>,\r\n'
        "\tzoë@Bücher.example\r\n"
        "cc: =?iso-8859-1?q?B=F6b?= <BOB@example.org>\r\n"
        "Subject: =?utf-8?b?R3LDvMOfZQ==?= again\r\n"
        "\r\n"
        "To: body@example.org\r\n"
    ).encode()
    intake = Intake(db, Settings("relay.test"))
    rcpts = ["ann@example.org", "zoë@xn--bcher-kva.example", "bob@example.org", "body@example.org"]
    try:
        accepted = await intake.submit(tenant, None, "", rcpts, raw)
    finally:
        await intake.close()
    async with db.read() as conn:
        row = (await conn.execute(select(messages))).one()
        kinds = dict(
            (await conn.execute(select(deliveries.c.recipient_key, deliveries.c.rcpt_type))).all()
        )
    assert row.subject == "Grüße again" and row.from_header == "Jörg <news@shop.example>"
    assert kinds == {
        "ann@example.org": "to",
        "zoë@xn--bcher-kva.example": "to",  # IDNA domain in the header matches the envelope
        "bob@example.org": "cc",
        "body@example.org": "bcc",  # a "To:" line in the body is not a header
    }
    assert set(accepted.states) == set(kinds)
    assert not may_hold_links(raw)
    assert may_hold_links(b"Subject: x\r\n\r\nsee HTTPS://example.org\r\n")
    assert may_hold_links(b"Content-Transfer-Encoding: base64\r\n\r\naHR0cDovL2V4YW1wbGUub3Jn\r\n")


async def test_close_during_a_commit_answers_by_its_outcome(db_url: str) -> None:
    """Shutting intake down while a batch is committing neither loses it nor says 451 for
    what was stored: the caller gets its message id once the transaction finished."""
    import asyncio
    import sqlite3

    from relay.config import DatabaseConfig

    if not db_url.startswith("sqlite"):
        pytest.skip("a held SQLite write lock is how the commit is kept waiting")
    db = Database.from_config(DatabaseConfig(url=db_url, busy_timeout=10))
    try:
        tenant = await add_tenant(db, "shop")
        intake = Intake(db, Settings("relay.test"))
        blocker = sqlite3.connect(db_url.split("///", 1)[1], isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        raw = b"From: news@shop.example\r\nTo: a@example.org\r\n\r\nhi\r\n"
        submit = asyncio.create_task(intake.submit(tenant, None, "", ["a@example.org"], raw))
        await asyncio.sleep(0.3)  # the batch is in the writer thread, waiting for the lock
        assert not submit.done()
        closing = asyncio.create_task(intake.close())
        await asyncio.sleep(0.3)
        assert not closing.done()  # close waits for the transaction under way
        blocker.execute("ROLLBACK")
        blocker.close()
        await asyncio.wait_for(closing, 10)
        accepted = await submit
        async with db.read() as conn:
            (row,) = (await conn.execute(select(messages.c.id))).all()
        assert row.id == accepted.message_id
    finally:
        await db.dispose()


ADDRESS_VALUES = [
    "ann@example.org",
    "Ann <ann@Example.ORG>",
    " J. Smith <j.s+x@ex.com> ",
    "=?utf-8?q?Gr=C3=BC?= <a@b.example>",
    "a@b.example, c@d.example",
    '"Q, X" <q@x.example>',
    "Ann (c) <a@b.example>",
    "group: a@b.example;",
    "Ann <ann@example.org",
    "x <a@b.example> y",
    "zoë@example.org",
    "Zoë <zoe@example.org>",
    "a..b@example.org",
    "a@[127.0.0.1]",
    "a@b.example.",
    "x@-y.example",
    "bad",
    "",
]


@pytest.mark.parametrize("value", ADDRESS_VALUES)
def test_address_fast_path_agrees_with_the_rfc5322_parser(value: str) -> None:
    import email.utils

    from relay.addresses import InvalidAddress, normalize
    from relay.intake import _addresses

    expected = set()
    for _, addr_spec in email.utils.getaddresses([value]):
        if addr_spec:
            try:
                expected.add(normalize(addr_spec).key)
            except InvalidAddress:
                pass
    assert _addresses([value]) == expected
