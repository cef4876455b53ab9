"""The failure policy: reply parsing, server-given delays, scopes of client errors."""

from __future__ import annotations

import aiosmtplib
import pytest

from relay.model import SmtpReply
from relay.transport.trouble import Scope, from_exception, parse_reply, retry_after_s


def test_parse_reply() -> None:
    assert parse_reply(550, "5.1.1  No such\n user") == SmtpReply(550, "No such user", "5.1.1")
    assert parse_reply(250, "OK") == SmtpReply(250, "OK")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("Try again in 30 seconds", 30.0), ("retry after 5 min", 300.0), ("busy", None)],
)
def test_retry_after(text: str, seconds: float | None) -> None:
    assert retry_after_s(SmtpReply(421, text)) == seconds
    assert retry_after_s(SmtpReply(550, text)) is None


def test_scopes() -> None:
    assert from_exception(ConnectionRefusedError(111, "refused")).scope is Scope.SITE
    auth = from_exception(aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad credentials"))
    assert auth.scope is Scope.SITE and auth.auth and auth.reply.enhanced == "5.7.8"
    rcpt = from_exception(aiosmtplib.SMTPRecipientRefused(550, "5.1.1 unknown", "a@b"))
    assert rcpt.scope is Scope.RECIPIENT and rcpt.reply.code == 550
    assert from_exception(aiosmtplib.SMTPResponseException(421, "closing")).scope is Scope.SITE
    assert from_exception(aiosmtplib.SMTPDataError(554, "5.6.0 bad")).scope is Scope.MESSAGE
    assert from_exception(aiosmtplib.SMTPServerDisconnected("gone")).reply.code == 451
