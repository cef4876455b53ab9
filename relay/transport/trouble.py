"""The failure policy (in the spirit of Postfix smtp_trouble.c): what an SMTP error means.

Input: an exception from aiosmtplib/the network, or an SMTP reply. Output: a `Trouble` —
the reply to record and its scope: `recipient` (this address), `message`, or `site` (the
server or account as a whole: connection refused, timeout, AUTH refused, 421). Site trouble
makes the pool try the next account; anything else is reported as the delivery's outcome.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import aiosmtplib

from relay.model import SmtpReply
from relay.transport.pipeline import Reply, Transaction

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s+")
# "try again in 120 seconds", "retry after 10 minutes": a server-given delay we honour.
_RETRY_IN = re.compile(
    r"(?:try again|retry)\s+(?:in|after)\s+(\d+)\s*(s|sec|seconds?|m|min|minutes?|h|hours?)\b",
    re.IGNORECASE,
)


class Scope(StrEnum):
    RECIPIENT = "recipient"
    MESSAGE = "message"
    SITE = "site"


@dataclass(frozen=True, slots=True)
class Trouble:
    reply: SmtpReply
    scope: Scope
    auth: bool = False  # the account's credentials were refused


def parse_reply(code: int, text: str) -> SmtpReply:
    """Split '5.1.1 No such user' into the enhanced status and the sentence."""
    text = " ".join(text.split())
    match = _ENHANCED.match(text)
    if match:
        return SmtpReply(code, text[match.end() :], match.group(1))
    return SmtpReply(code, text)


def retry_after_s(reply: SmtpReply) -> float | None:
    """A delay the server asked for in a 4xx text, in seconds, if any."""
    if not reply.is_transient:
        return None
    match = _RETRY_IN.search(reply.text)
    if not match:
        return None
    unit = match.group(2)[0].lower()
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[unit]


def judge(tx: Transaction) -> list[tuple[SmtpReply, Trouble | None]]:
    """Each recipient's reply and trouble (None: delivered), from one transaction's replies.

    A refused MAIL, DATA or message concerns every recipient (the message); a refused RCPT
    only its own recipient; 421 anywhere is the server closing the session (the site).
    """
    if not tx.mail.ok:
        shared = _scoped(tx.mail, Scope.MESSAGE)
        return [(shared.reply, shared)] * tx.recipients
    after: Reply | None = tx.final if tx.final is not None else tx.data
    judged: list[tuple[SmtpReply, Trouble | None]] = []
    for rcpt in tx.rcpts:
        if not 200 <= rcpt.code < 300:
            found = _scoped(rcpt, Scope.RECIPIENT)
            judged.append((found.reply, found))
        elif tx.delivered and tx.final is not None:
            judged.append((parse_reply(tx.final.code, tx.final.text), None))
        else:
            reply = after or Reply(451, "4.3.0 the server ended the transaction")
            if reply.code == 354:  # DATA accepted, the message itself was not sent
                reply = Reply(451, "4.3.0 the message could not be sent")
            found = _scoped(reply, Scope.MESSAGE)
            judged.append((found.reply, found))
    return judged


def _scoped(reply: Reply, scope: Scope) -> Trouble:
    return Trouble(parse_reply(reply.code, reply.text), Scope.SITE if reply.code == 421 else scope)


def from_exception(exc: BaseException) -> Trouble:
    """Map a client-side failure to a reply and a scope."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return Trouble(parse_reply(exc.code, exc.message), Scope.SITE, auth=True)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        first = exc.recipients[0]
        return Trouble(parse_reply(first.code, first.message), Scope.RECIPIENT)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return Trouble(parse_reply(exc.code, exc.message), Scope.RECIPIENT)
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return Trouble(SmtpReply(451, "connection lost: " + _short(exc), "4.4.2"), Scope.SITE)
    if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPConnectTimeoutError):
        return Trouble(SmtpReply(451, "cannot connect: " + _short(exc), "4.4.1"), Scope.SITE)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return Trouble(SmtpReply(451, "timed out: " + _short(exc), "4.4.2"), Scope.SITE)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        reply = parse_reply(exc.code, exc.message)
        # 421 = the server is closing the session: the site, not this message.
        scope = Scope.SITE if exc.code == 421 else Scope.MESSAGE
        return Trouble(reply, scope)
    if isinstance(exc, OSError):
        return Trouble(SmtpReply(451, "network error: " + _short(exc), "4.4.1"), Scope.SITE)
    return Trouble(SmtpReply(451, "delivery error: " + _short(exc), "4.3.0"), Scope.SITE)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
