"""Parsing inbound reports: DSNs from common MTAs and providers, ARF, auto-replies.

Samples come from the shared real-world corpus (../shared/bounces), read in place.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.bounce import ReportType, parse
from relay.model import BounceKind
from tests.conftest import SHARED

EML = SHARED / "bounces" / "eml"

SAMPLES = [
    # file, type, recipient, status, kind, reason
    ("lhost-postfix-31.eml", ReportType.DSN, "kijitora@gmail.com", "5.1.1", "hard", "userunknown"),
    ("lhost-postfix-16.eml", ReportType.DSN, "kijitora@example.go.jp", "5.1.6", "hard", "hasmoved"),
    (
        "lhost-postfix-09.eml",
        ReportType.DSN,
        "kijitora@example.ne.jp",
        "4.3.2",
        "soft",
        "toomanyconn",
    ),
    (
        "lhost-exim-05.eml",
        ReportType.NONSTANDARD,
        "kijitora@neko.example.co.jp",
        "5.1.1",
        "hard",
        "userunknown",
    ),
    (
        "lhost-sendmail-03.eml",
        ReportType.DSN,
        "bounce0@example.org",
        "5.1.1",
        "hard",
        "userunknown",
    ),
    ("lhost-sendmail-35.eml", ReportType.DSN, "kijitora@example.org", "5.7.13", "soft", "suspend"),
    ("lhost-gmail-18.eml", None, "kijitora@example.or.jp", "5.1.1", "hard", "userunknown"),
    (
        "lhost-office365-12.eml",
        ReportType.DSN,
        "kijitora@cr.neko.nyaan.jp",
        "5.2.2",
        "soft",
        "mailboxfull",
    ),
    (
        "rhost-outlook-04.eml",
        ReportType.DSN,
        "sabineko@example.co.jp",
        "5.1.1",
        "hard",
        "userunknown",
    ),
    (
        "rhost-google-03.eml",
        ReportType.DSN,
        "kijitora@google.example.com",
        "5.7.26",
        "soft",
        "authfailure",
    ),
    ("lhost-yahoo-12.eml", None, "kijitora@example.jp", "5.1.8", "soft", "rejected"),
    (
        "rhost-yahooinc-01.eml",
        ReportType.DSN,
        "kijitora@aol.example.jp",
        "5.7.9",
        "soft",
        "policyviolation",
    ),
]


def _read(name: str, variant: str = "lf") -> bytes:
    return (EML / variant / name).read_bytes()


@pytest.mark.parametrize(("name", "rtype", "recipient", "status", "kind", "reason"), SAMPLES)
def test_bounce_samples(
    name: str, rtype: ReportType | None, recipient: str, status: str, kind: str, reason: str
) -> None:
    report = parse(_read(name))
    if rtype is not None:
        assert report.type == rtype
    first = report.results[0]
    assert recipient.lower() in [r.recipient.lower() for r in report.results]
    assert (first.status, str(first.kind), first.reason) == (status, kind, reason)


def test_dsn_fields_and_original_message_id() -> None:
    report = parse(_read("lhost-postfix-31.eml"))
    first = report.results[0]
    assert first.action == "failed"
    assert "5.1.1" in first.diagnostic
    assert report.original_message_id.startswith("<") and report.original_message_id.endswith(">")


def test_line_endings_do_not_matter() -> None:
    crlf = sorted(p.name for p in (EML / "crlf").glob("*.eml"))
    assert crlf
    for name in crlf[:10]:
        assert parse(_read(name, "crlf")) == parse(_read(name, "lf"))


def test_arf_is_a_complaint() -> None:
    report = parse(_read("arf-02.eml"))
    assert report.type == ReportType.ARF
    assert report.feedback_type == "abuse"
    assert report.kind == BounceKind.COMPLAINT
    assert [r.recipient for r in report.results] == [
        "this-local-part-does-not-exist-on-yahoo@yahoo.com"
    ]
    assert all(r.reason == "feedback" for r in report.results)


def test_arf_multiple_recipients() -> None:
    report = parse(_read("arf-17.eml"))
    assert report.kind == BounceKind.COMPLAINT
    # One Original-Rcpt-To field per recipient (RFC 5965): every one is a complainant.
    assert [r.recipient for r in report.results] == ["kijitora@example.com", "sabatora@example.net"]


@pytest.mark.parametrize("name", ["rfc3834-01.eml", "rfc3834-02.eml"])
def test_auto_reply_is_not_a_bounce(name: str) -> None:
    report = parse(_read(name))
    assert report.type == ReportType.AUTOREPLY
    assert report.kind == BounceKind.NOT_BOUNCE
    assert report.results == ()


def test_auto_submitted_header_on_a_plain_message() -> None:
    raw = (
        b"From: alice@example.org\r\nTo: bounces+abc@relay.example\r\n"
        b"Subject: Re: hello\r\nAuto-Submitted: auto-replied\r\n\r\nI am away until May.\r\n"
    )
    report = parse(raw)
    assert report.type == ReportType.AUTOREPLY and report.kind == BounceKind.NOT_BOUNCE
    assert report.verp_rcpt == "bounces+abc@relay.example"


def test_minimal_dsn_built_by_hand() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nTo: bounces+tok@relay.example\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nsorry\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example\r\n\r\n"
        b"Final-Recipient: rfc822; gone@example.net\r\nOriginal-Recipient: rfc822;Gone@example.net"
        b"\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 <gone@example.net>: Recipient address rejected:\r\n"
        b" User unknown in virtual mailbox table\r\n\r\n"
        b"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <m1@relay.example>\r\n"
        b"\r\n--B--\r\n"
    )
    report = parse(raw)
    assert report.type == ReportType.DSN
    assert report.original_message_id == "<m1@relay.example>"
    (r,) = report.results
    assert (r.recipient, r.original_recipient, r.action, r.status) == (
        "gone@example.net",
        "Gone@example.net",
        "failed",
        "5.1.1",
    )
    assert r.kind == BounceKind.HARD and r.reason == "userunknown"
    assert "User unknown in virtual mailbox table" in r.diagnostic


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage",
        b"\xff\xfe\x00",
        b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n",
    ],
)
def test_garbage_never_raises(raw: bytes) -> None:
    report = parse(raw)
    assert report.type in (ReportType.UNKNOWN, ReportType.AUTOREPLY)
    assert report.results == ()


def test_corpus_dir_exists() -> None:
    assert Path(EML / "lf").is_dir()


def test_amazon_ses_notifications() -> None:
    # SNS envelope around a JSON bounce, with long lines folded inside the JSON strings.
    bounce = parse(_read("lhost-amazonses-10.eml"))
    assert bounce.type == ReportType.DSN
    (r,) = bounce.results
    assert (r.recipient, r.action, r.status, r.kind) == (
        "bounce@simulator.amazonses.com",
        "failed",
        "5.1.1",
        BounceKind.HARD,
    )
    complaint = parse(_read("lhost-amazonses-11.eml"))
    assert complaint.type == ReportType.ARF and complaint.kind == BounceKind.COMPLAINT
    assert [r.recipient for r in complaint.results] == ["complaint@simulator.amazonses.com"]


def test_ses_json_built_by_hand_transient() -> None:
    raw = (
        b"From: no-reply@sns.amazonaws.com\r\nSubject: AWS Notification Message\r\n\r\n"
        b'{"notificationType":"Bounce","bounce":{"bounceType":"Transient",'
        b'"bouncedRecipients":[{"emailAddress":"full@example.net","status":"4.2.2",'
        b'"diagnosticCode":"smtp; 452 4.2.2 Mailbox full"}]},'
        b'"mail":{"headers":[{"name":"Message-ID","value":"<m2@relay.example>"}]}}\r\n'
    )
    report = parse(raw)
    assert report.original_message_id == "<m2@relay.example>"
    (r,) = report.results
    assert (r.action, r.kind, r.reason) == ("delayed", BounceKind.SOFT, "mailboxfull")


def test_sendmail_preamble_is_not_the_returned_message() -> None:
    # "The original message was received at ..." opens Sendmail-style bounces; the failed
    # addresses and their reasons come after it.
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nTo: s@relay.example\r\n"
        b"Subject: Returned mail: User unknown\r\n\r\n"
        b"The original message was received at Thu, 29 Apr 2011 23:34:45 +0900\r\n\r\n"
        b"---The following addresses had delivery errors---\r\n"
        b"gone@example.org [User unknown]\r\n"
    )
    (r,) = parse(raw).results
    # Without the SMTP stage (RCPT) or a X.1.x code, "user unknown" is too weak to suppress.
    assert r.recipient == "gone@example.org" and "User unknown" in r.diagnostic


def test_reason_on_the_line_before_the_address() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nTo: s@relay.example\r\n"
        b"Subject: Undeliverable mail\r\n\r\n"
        b"User mailbox exceeds allowed size: full@example.org\r\n"
    )
    (r,) = parse(raw).results
    assert r.recipient == "full@example.org" and r.reason == "mailboxfull"


def test_x_unix_diagnostic_is_the_local_mailer() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nTo: s@relay.example\r\nSubject: Returned mail\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        b"Final-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 5.3.0\r\n"
        b"Diagnostic-Code: X-Unix; 255\r\n\r\n--B--\r\n"
    )
    (r,) = parse(raw).results
    assert (r.status, r.reason, r.kind) == ("5.3.0", "mailererror", BounceKind.SOFT)


def test_sendmail_first_line_diagnostic_is_completed_from_the_transcript() -> None:
    # Sendmail keeps only the first line of a multi-line reply in Diagnostic-Code.
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nTo: s@relay.example\r\nSubject: Returned mail\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\n"
        b">>> DATA\r\n"
        b"<<< 552-5.7.0 This message was blocked because its content presents a potential\r\n"
        b"<<< 552-5.7.0 security issue. Please visit\r\n"
        b"<<< 552 5.7.0 https://support.google.com/mail/answer/6590 - gsmtp\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        b"Final-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 5.7.0\r\n"
        b"Diagnostic-Code: SMTP; 552-5.7.0 This message was blocked because its content "
        b"presents a potential\r\n\r\n--B--\r\n"
    )
    (r,) = parse(raw).results
    assert "security issue" in r.diagnostic and r.reason == "policyviolation"


def test_each_recipient_gets_its_own_reason() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nTo: s@relay.example\r\n"
        b"Subject: Delivery failure\r\n\r\n"
        b"<gone@example.org>: This user doesn't have an account here\r\n"
        b"<full@example.org>: Sorry, this mailbox is full\r\n"
    )
    found = {r.recipient: r.reason for r in parse(raw).results}
    assert found["full@example.org"] == "mailboxfull"
    assert found["gone@example.org"] != "mailboxfull"  # the next address's text is not its own


def test_stage_named_on_the_address_line() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nTo: s@relay.example\r\n"
        b"Subject: Returned mail: User unknown\r\n\r\n"
        b"While talking to mx.example.org:\r\n"
        b">>> RCPT To:<gone@example.org>\r\n"
        b"<<< 550 <gone@example.org>... User unknown\r\n"
    )
    (r,) = parse(raw).results
    assert (r.reason, r.kind) == ("userunknown", BounceKind.HARD)


def test_multipart_without_boundaries_is_read_as_text() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nTo: s@relay.example\r\n"
        b"Subject: Returned mail\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"<full@example.org>\r\n\r\nmail.local: mailbox is full\r\n\r\n"
        b"Reporting-MTA: dns; mx.example\r\n\r\n"
        b"Final-Recipient: RFC822; <full@example.org>\r\nAction: failed\r\nStatus: 5.2.2\r\n"
    )
    results = parse(raw).results
    assert [(r.recipient, r.reason) for r in results] == [("full@example.org", "mailboxfull")]
