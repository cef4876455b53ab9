"""Who a plain-text bounce is about: recipients from bounce-shaped contexts only.

The messages are written for these tests in the shapes MTAs use; none comes from the corpus.
"""

from __future__ import annotations

from email import message_from_string

from relay.bounce import ReportType, parse
from relay.bounce.recipients import excluded_parties, looks_like_message_id, named_recipients
from relay.model import BounceKind


def _parse(text: str) -> list[str]:
    return sorted(r.recipient for r in parse(text.encode()).results)


def test_exim_style_list_ignores_the_help_address_and_the_quoted_original() -> None:
    text = """\
From: Mail Delivery System <Mailer-Daemon@mx1.example.net>
To: alice@sender.example
Subject: Mail delivery failed: returning message to sender

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. For help, please write to helpdesk@isp.example.net with the
text of this message.

  bob@far.example.org
    host mx.far.example.org [192.0.2.7]
    SMTP error from remote mail server after RCPT TO:<bob@far.example.org>:
    550 5.1.1 No such user here

------ This is a copy of the message, including all the headers. ------

Return-path: <alice@sender.example>
From: Alice <alice@sender.example>
Reply-To: list-owner@lists.sender.example
To: bob@far.example.org
Message-ID: <20240101120000.5f3a9c1e2b7d4a60@sender.example>
Subject: hello
"""
    assert _parse(text) == ["bob@far.example.org"]
    report = parse(text.encode())
    assert report.type == ReportType.NONSTANDARD
    assert report.results[0].kind == BounceKind.HARD


def test_strong_contexts_outrank_mentions() -> None:
    body = """\
Your message to <carol@dest.example> could not be delivered.
dave@dest.example... User unknown
<<< 550 5.2.2 <erin@dest.example>... Mailbox full
>>> RCPT To:<frank@dest.example>
See https://help.example.com/u/grace@dest.example for details.
Questions? Contact heidi@support.example.
The message was sent by ivan@sender.example on Monday.
"""
    strong, weak = named_recipients(body, set())
    assert strong == [
        "carol@dest.example",
        "dave@dest.example",
        "erin@dest.example",
        "frank@dest.example",
    ]
    assert weak == ["heidi@support.example"]


def test_quoted_header_fields_and_identifiers_are_never_recipients() -> None:
    body = """\
Delivery to the following recipient failed permanently:

    judy@dest.example

   Received: from mail.sender.example by mx.dest.example
   \tfor <judy@dest.example>; Mon, 1 Jan 2024 12:00:00 +0000
   From: Mallory <mallory@sender.example>
   Message-ID: <a1b2c3d4e5f60718.293a4b5c6d7e8f90@sender.example>
"""
    strong, weak = named_recipients(body, set())
    assert strong == ["judy@dest.example"]
    assert weak == []
    assert looks_like_message_id("14a3e1b4b5a.10b1a4c5610175.858838608342@mail.example")
    assert not looks_like_message_id("john.smith@example.com")


def test_the_returned_originals_sender_is_excluded() -> None:
    msg = message_from_string("""\
From: postmaster@gw.example
To: bounces@sender.example
Subject: Undeliverable
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: text/plain

mike@dest.example: no such mailbox. The sender was oscar@sender.example.

--b
Content-Type: message/rfc822

From: Oscar <oscar@sender.example>
Return-Path: <oscar-bounces@sender.example>
To: mike@dest.example
Subject: hi

hi
--b--
""")
    excluded = excluded_parties(msg, [])
    assert {"oscar@sender.example", "oscar-bounces@sender.example"} <= excluded
    assert "mike@dest.example" not in excluded


def test_a_bounce_with_an_unremarkable_sender_and_subject_is_known_by_its_words() -> None:
    text = """\
From: Gateway <gateway@relay.example.com>
To: peggy@sender.example
Subject: Re: quarterly figures

Your message could not be delivered to the following recipient:

<trent@dest.example>: 550 5.1.1 Recipient address rejected: User unknown
"""
    report = parse(text.encode())
    assert report.type == ReportType.NONSTANDARD
    assert [r.recipient for r in report.results] == ["trent@dest.example"]
    assert report.results[0].reason == "userunknown"


def test_an_auto_reply_quoting_failure_words_stays_an_auto_reply() -> None:
    text = """\
From: Victor <victor@dest.example>
To: peggy@sender.example
Subject: Re: quarterly figures
Auto-Submitted: auto-replied

I am away. If your message is undeliverable elsewhere, write to walter@dest.example.
"""
    report = parse(text.encode())
    assert report.type == ReportType.AUTOREPLY
    assert report.results == ()


def test_an_auto_generated_bounce_is_still_a_bounce() -> None:
    # RFC 3834: "auto-generated" marks any automatic message, bounces included.
    text = """\
From: Gateway <gateway@relay.example.com>
To: peggy@sender.example
Subject: Notice
Auto-Submitted: auto-generated

Delivery to the following recipient has failed permanently:

    walter@dest.example

550 5.1.1 The email account that you tried to reach does not exist.
"""
    report = parse(text.encode())
    assert report.type == ReportType.NONSTANDARD
    assert [r.recipient for r in report.results] == ["walter@dest.example"]
    assert report.kind == BounceKind.HARD
