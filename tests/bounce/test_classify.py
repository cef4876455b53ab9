"""Synchronous classification of SMTP replies, as MTAs and big providers write them."""

from __future__ import annotations

import pytest

from relay.bounce import classify, classify_reply
from relay.model import BounceKind, SmtpReply

HARD, SOFT = BounceKind.HARD, BounceKind.SOFT

TABLE = [
    # Postfix
    (
        550,
        "5.1.1",
        "<a@example.org>: Recipient address rejected: User unknown in local recipient table",
        HARD,
        "userunknown",
    ),
    (
        450,
        "4.7.1",
        "Client host rejected: cannot find your hostname, [192.0.2.1]",
        SOFT,
        "requireptr",
    ),
    (554, "5.7.1", "<a@example.org>: Relay access denied", SOFT, "norelaying"),
    (452, "4.2.2", "Mailbox full", SOFT, "mailboxfull"),
    # Exim
    (550, None, "Unrouteable address", HARD, "hostunknown"),  # Exim: no route to the domain
    (
        550,
        None,
        "rejected because 192.0.2.1 is in a black list at zen.spamhaus.org",
        SOFT,
        "blocked",
    ),
    # Sendmail
    (550, "5.1.1", "<a@example.org>... User unknown", HARD, "userunknown"),
    (552, "5.2.2", "<a@example.org>... Mailbox full", SOFT, "mailboxfull"),
    (
        553,
        "5.1.8",
        "<s@example.com>... Domain of sender address s@example.com does not exist",
        SOFT,
        "rejected",
    ),
    # Gmail
    (
        550,
        "5.1.1",
        "The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos",
        HARD,
        "userunknown",
    ),
    (552, "5.2.2", "The email account that you tried to reach is over quota.", SOFT, "mailboxfull"),
    (
        550,
        "5.7.26",
        "This mail has been blocked because the sender is unauthenticated. Gmail "
        "requires all senders to authenticate with either SPF or DKIM.",
        SOFT,
        "authfailure",
    ),
    (
        421,
        "4.7.0",
        "Our system has detected an unusual rate of unsolicited mail originating "
        "from your IP address. To protect our users from spam, mail sent from your IP address "
        "has been temporarily rate limited.",
        SOFT,
        "speeding",
    ),
    (
        550,
        "5.7.1",
        "Our system has detected that this message is likely unsolicited mail.",
        SOFT,
        "spamdetected",
    ),
    (552, "5.3.4", "Your message exceeded Google's message size limits.", SOFT, "mesgtoobig"),
    # Microsoft
    (
        550,
        "5.5.0",
        "Requested action not taken: mailbox unavailable (S2017062302).",
        HARD,
        "userunknown",
    ),
    (
        550,
        "5.7.1",
        "Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your "
        "Internet service provider since part of their network is on our block list (S3140).",
        SOFT,
        "blocked",
    ),
    (550, "5.4.1", "Recipient address rejected: Access denied. AS(201806281)", SOFT, "blocked"),
    # Yahoo
    (554, "5.7.9", "Message not accepted for policy reasons.", SOFT, "policyviolation"),
    (
        421,
        "4.7.0",
        "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected "
        "volume or user complaints",
        SOFT,
        "speeding",
    ),
    (
        554,
        None,
        "delivery error: dd This user doesn't have a yahoo.com account (a@yahoo.com) "
        "[0] - mta1.mail.bf1.yahoo.com",
        HARD,
        "userunknown",
    ),
    # Generic
    (550, "5.1.2", "Host unknown", HARD, "hostunknown"),
    (550, "5.1.6", "Recipient has moved", HARD, "hasmoved"),
    (421, None, "Too many concurrent connections from your IP", SOFT, "toomanyconn"),
    (451, "4.4.1", "Connection timed out", SOFT, "networkerror"),
    (554, "5.6.0", "Message contains invalid header", SOFT, "contenterror"),
    # A multi-line reply reads on across its repeated "550-5.7.1" prefixes.
    (
        550,
        "5.7.1",
        "550-5.7.1 [192.0.2.1 13] Messages with multiple\n550 5.7.1 addresses in From: header "
        "are not accepted.",
        SOFT,
        "notcompliantrfc",
    ),
    (552, "5.5.3", "Too many recipients", SOFT, "toomanyconn"),
    (550, "5.1.1", "192.0.2.1 has sent to too many recipients this hour", SOFT, "speeding"),
    (550, "5.7.0", "Please use the smtp server of your ISP.", SOFT, "blocked"),
    (500, None, "Remote server does not support TLS (state 6).", SOFT, "failedstarttls"),
    (504, None, "Command parameter not implemented", SOFT, "syntaxerror"),
    (521, "5.3.2", "System not accepting network messages", HARD, "notaccept"),
    (551, "5.7.1", "Delivery not authorized", SOFT, "securityerror"),
    (550, "5.2.1", "<a@example.org>... Mailbox disabled", SOFT, "suspend"),
    (552, None, "Line limit exceeded", SOFT, "mesgtoobig"),
    (550, "5.2.1", "This mailbox has been blocked due to inactivity", SOFT, "suspend"),
    # DNS: NXDOMAIN says the domain does not exist; a failed lookup says nothing about it.
    (
        550,
        "5.4.4",
        "Host or domain name not found. Name service error for name=x.example type=A: "
        "Host not found",
        HARD,
        "hostunknown",
    ),
    (
        550,
        "5.4.4",
        "Name service error for name=x.example type=MX: Malformed or unexpected name server reply",
        SOFT,
        "networkerror",
    ),
    # An explicit spam verdict beats the advice about SPF that follows it.
    (
        550,
        "5.7.1",
        "Your email was rejected due to spam classification. Set up SPF records for your domain",
        SOFT,
        "spamdetected",
    ),
    # Directory lookups: no such mailbox, whatever the stage.
    (550, None, "MSEXCH:IMS:ORG:SITE:SERVER 0 (000C05A6) Unknown Recipient", HARD, "userunknown"),
    (
        450,
        None,
        "service permits 2 unverifyable sending IPs - a.example is not 192.0.2.1",
        SOFT,
        "requireptr",
    ),
    (554, None, "Message rejected: Email address is not verified.", SOFT, "norelaying"),
    # Other languages
    (550, None, "Benutzer unbekannt", HARD, "userunknown"),
    (550, None, "Destinataire inconnu", HARD, "userunknown"),
    (550, None, "<a@example.es>: usuario desconocido", HARD, "userunknown"),
    (550, None, "utente inesistente", HARD, "userunknown"),
]


@pytest.mark.parametrize(("code", "enhanced", "text", "kind", "reason"), TABLE)
def test_classify_reply(
    code: int, enhanced: str | None, text: str, kind: BounceKind, reason: str
) -> None:
    c = classify_reply(SmtpReply(code, text, enhanced))
    assert (c.kind, c.reason) == (kind, reason)
    if enhanced:
        assert c.status == enhanced


def test_transient_user_unknown_is_not_hard() -> None:
    # A 4xx is never final, whatever the text says: do not suppress on a retryable reply.
    c = classify_reply(SmtpReply(450, "User unknown in local recipient table", "4.1.1"))
    assert c.kind == SOFT and c.reason == "userunknown"


def test_basic_code_decides_class_when_enhanced_disagrees() -> None:
    c = classify_reply(SmtpReply(451, "Mailbox temporarily unavailable", "5.1.1"))
    assert c.status == "4.1.1" and c.kind == SOFT


def test_status_found_in_text_when_not_given() -> None:
    c = classify_reply(SmtpReply(550, "5.1.1 <a@b.example>: Recipient address rejected"))
    assert c.status == "5.1.1" and c.kind == HARD


def test_positive_reply_is_not_a_bounce() -> None:
    assert classify_reply(SmtpReply(250, "2.0.0 OK", "2.0.0")).kind == BounceKind.NOT_BOUNCE


def test_unknown_text_falls_back_to_status_and_code() -> None:
    assert classify_reply(SmtpReply(554, "nope")).status == "5.0.0"
    assert classify_reply(SmtpReply(554, "nope")).kind == SOFT
    assert classify_reply(SmtpReply(550, "zzz", "5.1.1")).reason == "userunknown"


def test_status_alone_by_class() -> None:
    # RFC 3463 codes whose meaning differs between transient and permanent.
    assert classify_reply(SmtpReply(450, "zzz", "4.2.1")).reason == "blocked"
    assert classify_reply(SmtpReply(550, "zzz", "5.2.1")).reason == "suspend"
    assert classify_reply(SmtpReply(550, "zzz", "5.7.27")).kind == HARD  # null MX


def test_no_answer_from_host_in_a_final_report_is_expired() -> None:
    assert classify("4.4.1", "Connection timed out", None, "failed", "").reason == "expired"
    assert classify("4.4.1", "Connection timed out", None, "delayed", "").reason == "networkerror"


def test_delay_notice_after_generic_trouble_is_expired() -> None:
    from relay.bounce import classify

    assert classify("4.3.0", "Internal server error", None, "delayed", "").reason == "expired"
    assert classify("4.3.0", "Internal server error", None, "failed", "").reason == "systemerror"
    # A specific reason stands in a delay notice too.
    assert classify("4.2.2", "Mailbox full", None, "delayed", "").reason == "mailboxfull"


def test_sendmail_transcript_markers_do_not_split_a_sentence() -> None:
    text = "<<< 552-5.7.0 its content presents a potential <<< 552-5.7.0 security issue"
    assert classify_reply(SmtpReply(552, text, "5.7.0")).reason == "policyviolation"


def test_directory_userunknown_is_not_demoted_without_the_rcpt_stage() -> None:
    from relay.bounce import classify

    plain = classify("5.0.0", "550 User unknown", None, "failed", "")
    notes = classify("", "User not listed in public Name & Address Book", None, "failed", "")
    assert (plain.reason, plain.kind) == ("filtered", SOFT)
    assert (notes.reason, notes.kind) == ("userunknown", HARD)


@pytest.mark.parametrize(
    ("field", "quoted", "chosen"),
    [
        ("5.0.0", "5.7.1", "5.7.1"),  # a generic Status field defers to the remote's code
        ("5.1.0", "5.1.1", "5.1.1"),
        ("5.0.0", "5.0.0", "5.0.0"),
        ("5.2.2", "5.0.0", "5.2.2"),  # a generic quoted code says less than the field
        ("5.3.0", "5.7.1", "5.7.1"),  # X.3 system error: only "something went wrong"
        ("4.4.7", "4.2.2", "4.2.2"),
        ("5.1.1", "5.7.1", "5.7.1"),
        ("5.1.1", "5.5.0", "5.1.1"),
        ("5.2.2", "5.2.1", "5.2.2"),  # two specific codes: the field stands
        ("", "5.1.1", "5.1.1"),
        ("5.1.1", "", "5.1.1"),
    ],
)
def test_status_field_against_the_quoted_code(field: str, quoted: str, chosen: str) -> None:
    from relay.bounce.classify import prefer_status

    assert prefer_status(field, quoted) == chosen


def test_report_status_is_the_preferred_code() -> None:
    from relay.bounce import classify

    c = classify("5.0.0", "550 5.7.1 Connections not accepted: fix reverse DNS", None, "failed")
    assert c.status == "5.7.1" and c.reason == "requireptr"


# General rules: phrase families, the order of text and code, the fallbacks (relay.bounce.rules,
# relay.bounce.codes). The replies are written for these tests, in the style of common MTAs.
GENERAL = [
    # Phrase families, whatever the exact wording.
    (552, None, "Sorry, the inbox of bob is over its quota", SOFT, "mailboxfull"),
    (452, None, "Mail folder of the recipient exceeded", SOFT, "mailboxfull"),
    (550, "5.2.1", "User bob@example.net is currently disabled", SOFT, "suspend"),
    (550, None, "Account was temporarily frozen by the administrator", SOFT, "suspend"),
    (552, None, "Mail size limit of 20 MB reached, please send less", SOFT, "mesgtoobig"),
    (552, None, "Message is larger than the 10 MB this server takes", SOFT, "mesgtoobig"),
    (530, None, "This server requires TLS for all mail", SOFT, "failedstarttls"),
    (550, None, "Domain example.invalid does not exist", HARD, "hostunknown"),
    (550, None, "bob@example.net: no such host known", HARD, "hostunknown"),
    (551, None, "User not local; please try <bob@new.example>", HARD, "hasmoved"),
    (550, None, "bob@example.net has been replaced by bob@new.example", HARD, "hasmoved"),
    (550, None, "User bob not found in LDAP directory", HARD, "userunknown"),
    (550, "5.1.1", "<bob@example.net> unknown alias on mx1.exampledns.net", HARD, "userunknown"),
    (550, "5.7.1", "Message quarantined as spam by the content filter", SOFT, "spamdetected"),
    (550, None, "Your mail was scored as junk (8.2 points)", SOFT, "spamdetected"),
    (553, None, "The sender's domain has no MX and no A record", SOFT, "rejected"),
    (550, None, "Bad sender address <x@nowhere>", SOFT, "rejected"),
    # "not listed in" a directory is not a DNSBL listing.
    (550, None, "User bob (bob@example.net) not listed in Domino Directory", HARD, "userunknown"),
    # "too long" is expired only for a queue: a long line is the message's fault.
    (451, None, "This message has been in the queue too long", SOFT, "expired"),
    # Wording classes: any MTA's word order for relaying, size, DNSBLs, hosts, expiry.
    (550, None, "Relaying is not permitted for your address", SOFT, "norelaying"),
    (554, None, "We will not relay mail for example.net", SOFT, "norelaying"),
    (552, None, "Your message's size of 31 MB exceeds what we take", SOFT, "mesgtoobig"),
    (554, None, "Connection from 192.0.2.9 rejected: see uceprotect.net", SOFT, "blocked"),
    (550, None, "Host mx.example.invalid could not be found", HARD, "hostunknown"),
    (550, None, "Unroutable mail domain example.invalid", HARD, "hostunknown"),
    (421, None, "Too many open sessions from your address, come back later", SOFT, "toomanyconn"),
    (554, None, "Message was undeliverable for more than 5 days", SOFT, "expired"),
    (530, "5.7.0", "Must issue a STARTTLS command first", SOFT, "failedstarttls"),
    (550, None, "Header lines break RFC 5322, fix them", SOFT, "notcompliantrfc"),
    # Postfix's "delivery temporarily suspended" defers a destination, not an account.
    (
        451,
        None,
        "delivery temporarily suspended: connect to mx.example.net: network is unreachable",
        SOFT,
        "networkerror",
    ),
    # A provider's documented code (GoDaddy IBnnn) beats the wording.
    (550, "5.7.1", "Please provide a valid From: address. IB501", SOFT, "notcompliantrfc"),
]


@pytest.mark.parametrize(("code", "enhanced", "text", "kind", "reason"), GENERAL)
def test_general_rules(
    code: int, enhanced: str | None, text: str, kind: BounceKind, reason: str
) -> None:
    c = classify_reply(SmtpReply(code, text, enhanced))
    assert (c.kind, c.reason) == (kind, reason)


def test_generic_wording_yields_to_the_status_code() -> None:
    # Postfix prefixes any recipient restriction with "Recipient address rejected:": the code
    # says which restriction it was.
    reply = "<bob@example.net>: Recipient address rejected: closed for maintenance"
    assert classify_reply(SmtpReply(521, reply, "5.3.2")).reason == "notaccept"
    assert classify_reply(SmtpReply(550, "Message refused", "5.7.1")).reason == "securityerror"
    # With no code to speak, the generic wording still counts.
    c = classify_reply(SmtpReply(550, reply.replace("closed for maintenance", "see our site")))
    assert (c.kind, c.reason) == (HARD, "userunknown")
    assert classify_reply(SmtpReply(554, "Transaction refused")).reason == "rejected"


def test_status_subject_when_the_detail_is_unknown() -> None:
    # RFC 3463: the subject alone still says media, security, system or network trouble.
    assert classify_reply(SmtpReply(554, "zzz", "5.6.9")).reason == "contenterror"
    assert classify_reply(SmtpReply(550, "zzz", "5.7.99")).reason == "securityerror"
    assert classify_reply(SmtpReply(554, "zzz", "5.3.9")).reason == "systemerror"
    assert classify_reply(SmtpReply(554, "zzz", "5.4.9")).reason == "networkerror"
    # X.7.x by default is a security or policy status, not a verdict on the sender.
    assert classify_reply(SmtpReply(550, "zzz", "5.7.1")).reason == "securityerror"
    assert classify_reply(SmtpReply(451, "zzz", "4.7.1")).reason == "blocked"


def test_basic_code_when_nothing_else_speaks() -> None:
    # RFC 5321 protocol errors and RFC 7504's "does not accept mail" codes.
    assert classify_reply(SmtpReply(503, "need RCPT first")).reason == "syntaxerror"
    assert classify_reply(SmtpReply(504, "zzz")).reason == "syntaxerror"
    c = classify_reply(SmtpReply(556, "example.net: zzz"))
    assert (c.kind, c.reason) == (HARD, "notaccept")
    assert classify_reply(SmtpReply(550, "zzz")).reason == "onhold"  # 550 alone says nothing


def test_a_final_report_on_an_unknown_address_is_hard_even_with_a_4xx_code() -> None:
    text = "450 4.1.1 <a@example.org>: Recipient address rejected: User unknown"
    assert classify("4.1.1", text, None, "failed", "RCPT").kind == BounceKind.HARD
    # Still being retried, or a live reply: the far end may yet know the address.
    assert classify("4.1.1", text, None, "delayed", "RCPT").kind == BounceKind.SOFT
    assert classify("4.1.1", text, 450, "", "RCPT").kind == BounceKind.SOFT


def test_the_stage_explains_a_refusal_the_words_do_not() -> None:
    from relay.bounce.classify import find_command

    # Refused at the greeting or at HELO: the client host is refused (sisimai's "blocked").
    greeting = "host mx.example.net[192.0.2.7] refused to talk to me: 554 Go away"
    assert find_command(greeting) == "CONN"
    assert classify("5.0.0", greeting, None, "failed", "CONN").reason == "blocked"
    helo = "SMTP error from remote mail server after EHLO box.example.org: 550 Nope"
    assert find_command(helo) == "HELO"
    assert classify("", helo, None, "failed", "HELO").reason == "blocked"
    # At MAIL FROM: the sender is refused, even when the words speak of an unknown user.
    mail = "host mx.example.net said: 550 Unknown user (in reply to MAIL FROM command)"
    assert find_command(mail) == "MAIL"
    assert classify("5.0.0", mail, None, "failed", "MAIL").reason == "rejected"
    assert classify("5.0.0", "550 Not today", None, "failed", "MAIL").reason == "rejected"
    # At RCPT the wording still decides; the stage alone says nothing more.
    rcpt = "host mx.example.net said: 550 Request refused (in reply to RCPT TO command)"
    assert classify("5.0.0", rcpt, None, "failed", "RCPT").reason == "rejected"



def test_a_reputation_verdict_beats_a_passing_mention_of_spam() -> None:
    text = (
        "This message has been rate limited because of the very low reputation of the "
        "sending domain. To protect our users from spam, mail is limited."
    )
    assert classify_reply(SmtpReply(421, text, "4.7.0")).reason == "badreputation"


def test_encryption_reply_codes_when_nothing_else_speaks() -> None:
    assert classify_reply(SmtpReply(538, "zzz")).reason == "failedstarttls"


def test_generic_codes_leave_the_reason_to_the_words_or_to_onhold() -> None:
    # X.5.0 and X.5.1 come with refusals of every kind; the basic code still tells a
    # command syntax error.
    assert classify_reply(SmtpReply(550, "zzz", "5.5.0")).reason == "onhold"
    assert classify_reply(SmtpReply(501, "zzz", "5.5.1")).reason == "syntaxerror"
    # A generic transient code in a final report: words but no condition is "onhold",
    # no words at all "undefined".
    assert classify("4.3.0", "451 Please come back", None, "failed", "").reason == "onhold"
    assert classify("4.4.0", "", None, "failed", "").reason == "undefined"
    # Still in the queue: the message is ageing.
    assert classify("4.4.0", "451 Please come back", None, "delayed", "").reason == "expired"
    assert classify_reply(SmtpReply(552, "zzz", "5.7.16")).reason == "mesgtoobig"
