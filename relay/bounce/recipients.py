"""Who a plain-text bounce is about: the failed recipients an MTA's own format names.

Input: the human-readable text of a bounce (the returned original cut off) and the addresses
that can never be the failed recipient (`excluded_parties`); output: the addresses named in a
bounce-shaped context (an address opening its line, an SMTP reply or RCPT naming it, failure
wording around it), else the others. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.message import Message
from email.utils import getaddresses

ADDRESS_RE = re.compile(r"<?([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)>?")
ROLE_LOCALS = frozenset({"postmaster", "mailer-daemon", "mailer_daemon"})
# Quoted header fields whose addresses are never the failed recipient: the original's sender,
# trace fields, identifiers. To/Cc are the original recipients: a last resort, not a finding.
SENDER_FIELDS = re.compile(
    r"^[\s>]*(from|sender|reply-to|return-path|errors-to|envelope-from|message-id|references|"
    r"in-reply-to|received|delivered-to|x-[\w-]+|dkim-signature|arc-[\w-]+|list-[\w-]+|"
    r"resent-[\w-]+|authentication-results)\s*:",
    re.IGNORECASE,
)
RECIPIENT_FIELDS = re.compile(r"^[\s>]*(to|cc)\s*:", re.IGNORECASE)
# The words just before an address that make it a sender, a contact or an identifier.
NOT_RECIPIENT_BEFORE = re.compile(
    r"(mail from:?|\bfrom:?|envelope-from|sender:?|return-path:?|message-id:?|\bid|"
    r"\b(?:sent|written|originated) by)\s*<?$",
    re.IGNORECASE,
)
CONTACT_BEFORE = re.compile(
    r"\b(contact|write to|send (an? )?(e-?mail|message|mail) to|questions?|assistance|help|"
    r"support|administrator|inquir|mailto:?$)",
    re.IGNORECASE,
)
# An address that opens its line (Exim's indented list, qmail's "<a@b>:", Sendmail's
# "a@b... User unknown", Postfix's "<a@b>: host ... said:"), after an optional transcript mark.
LEADS_LINE = re.compile(r"^\s*(?:>>>\s*|[-*•]\s+)?[\"'<(]*$")
# An SMTP reply or the RCPT command on the line before the address.
SMTP_BEFORE = re.compile(
    r"(?:^|\s)(?:<<<\s*)?[45]\d\d[ -]|\brcpt to:?\s*<?\s*$|\brecipient:?\s*<?\s*$", re.IGNORECASE
)
FAILURE_WORDS = re.compile(
    r"deliver|recipient|\brcpt\b|mailbox|\buser\b|addressee|unknown|reject|refused|fail|"
    r"bounce|invalid|could ?n[o']t|can ?not|unable|not (?:be )?(?:found|exist|accept)|"
    r"(?:message|mail|e-?mail)\s+(?:sent\s+|addressed\s+)?to\b|\bto:?\s*<?$|"
    r"unzustellbar|non remis|inexistant",
    re.IGNORECASE,
)


def excluded_parties(msg: Message, texts: Iterable[str]) -> set[str]:
    """Addresses that are never the failed recipient, lower-cased: the bounce's own From and
    To, the returned original's sender (From, Sender, Return-Path, Reply-To) and Message-IDs."""
    own = {a.lower() for _, a in getaddresses(msg.get_all("to", []) + msg.get_all("from", []))}
    for inner in _returned_headers(msg):
        for name in ("from", "sender", "return-path", "reply-to"):
            own.update(a.lower() for _, a in getaddresses(inner.get_all(name, [])) if "@" in a)
        for name in ("message-id", "in-reply-to", "references"):
            own.update(m.group(1).lower() for v in inner.get_all(name, []) for m in _ids(str(v)))
    for text in texts:
        for line in text.splitlines():
            if SENDER_FIELDS.match(line):
                own.update(m.group(1).lower() for m in ADDRESS_RE.finditer(line))
    return own


def _ids(value: str) -> Iterable[re.Match[str]]:
    return re.finditer(r"<([^<>\s]+@[^<>\s]+)>", value)


def _returned_headers(msg: Message) -> list[Message]:
    out: list[Message] = []
    for part in msg.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                out.append(payload[0])
    return out


def original_recipients(msg: Message, quoted: str) -> list[str]:
    """The To and Cc of the returned original (attached, else quoted after the cut)."""
    for inner in _returned_headers(msg):
        found = getaddresses(inner.get_all("to", []) + inner.get_all("cc", []))
        addrs = [a for _, a in found if "@" in a]
        if addrs:
            return addrs
    out: list[str] = []
    for line in quoted.splitlines():
        if RECIPIENT_FIELDS.match(line):
            out.extend(m.group(1) for m in ADDRESS_RE.finditer(line))
            if out:
                break
    return out


def looks_like_message_id(addr: str) -> bool:
    """A Message-ID-like token (`14a3e1b4b5a.10b1a4c5610175.85883@host`), not a mailbox."""
    local = addr.partition("@")[0]
    digits = sum(c.isdigit() for c in local)
    return len(local) >= 16 and digits >= 8 and bool(re.fullmatch(r"[0-9A-Fa-f.$%_=+-]+", local))


def is_candidate(addr: str, excluded: set[str]) -> bool:
    low = addr.lower()
    return (
        low not in excluded
        and low.partition("@")[0] not in ROLE_LOCALS
        and not looks_like_message_id(addr)
    )


def named_recipients(body: str, excluded: set[str]) -> tuple[list[str], list[str]]:
    """(strong, weak): the addresses a bounce's text names in a bounce-shaped context, and
    the others, in order of first mention; neither holds an excluded party."""
    strong: list[str] = []
    weak: list[str] = []
    seen: set[str] = set()
    in_header = False
    for line in body.splitlines():
        if not line.strip():
            in_header = False
            continue
        if SENDER_FIELDS.match(line) or RECIPIENT_FIELDS.match(line):
            in_header = True  # quoted original headers, and their folded continuations
            continue
        if in_header and line[:1] in " \t":
            continue
        in_header = False
        for m in ADDRESS_RE.finditer(line):
            addr = m.group(1).rstrip(".")
            before, after = line[: m.start()], line[m.end() :]
            if addr.lower() in seen or not is_candidate(addr, excluded):
                continue
            if _in_url(line, m.start(), m.end()) or NOT_RECIPIENT_BEFORE.search(before[-24:]):
                continue
            seen.add(addr.lower())
            if CONTACT_BEFORE.search(before):
                weak.append(addr)
            elif (
                LEADS_LINE.match(before)
                or SMTP_BEFORE.search(before)
                or FAILURE_WORDS.search(before)
                or FAILURE_WORDS.search(after)
            ):
                strong.append(addr)
            else:
                weak.append(addr)
    return strong, weak


def _in_url(line: str, start: int, end: int) -> bool:
    """Whether the address at line[start:end] is part of a URL (a link's path or query)."""
    token_start = max(line.rfind(" ", 0, start), line.rfind("\t", 0, start)) + 1
    token = line[token_start:end]
    return "://" in token or (start > 0 and line[start - 1] in "/=?&")
