"""Bounce and complaint understanding, pure: no I/O.

`classify_reply(SmtpReply)` classifies a synchronous SMTP failure; `parse(raw bytes)` reads an
inbound report (RFC 3464 DSN, an MTA's plain-text bounce, RFC 5965 ARF, an auto-reply) into a
`Report` with one classified result per recipient.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from email import message_from_bytes, policy
from email.message import Message
from email.utils import getaddresses

from flufl.bounce import all_failures

from relay.bounce.arf import parse_arf
from relay.bounce.classify import classify, classify_reply, find_command, find_status
from relay.bounce.dsn import address_of, diagnostic_of, status_blocks
from relay.bounce.recipients import (
    ADDRESS_RE,
    excluded_parties,
    is_candidate,
    named_recipients,
    original_recipients,
)
from relay.bounce.report import RecipientResult, Report, ReportType
from relay.bounce.ses import parse_ses
from relay.model import BounceKind, Classification

__all__ = ["Report", "RecipientResult", "ReportType", "classify", "classify_reply", "parse"]

AUTOREPLY_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|abwesenheit|"
    r"vacation|away from|r[ée]ponse automatique)",
    re.IGNORECASE,
)
MESSAGE_ID_RE = re.compile(r"^message-id:\s*(<[^>\s]+>)", re.IGNORECASE | re.MULTILINE)
DIAG_WINDOW = 600
WEAK_REASONS = frozenset({"", "onhold", "undefined"})
LOCAL_MAILER_REASONS = frozenset({"", "onhold", "undefined", "systemerror"})
CUT_RE = re.compile(
    r"^[-=* ]*(original message|this is a copy|below this line|message headers follow|"
    r"returned message|undelivered message|the original message|headers of the original)"
    r"(?! was received)|"  # Sendmail's preamble, not the start of the returned original
    r"^content-type: message/rfc822|^(received|return-path|reporting-mta): ",
    re.IGNORECASE | re.MULTILINE,
)


def parse(raw: bytes) -> Report:
    """Parse one inbound message into a Report; never raises on malformed input."""
    raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    msg = message_from_bytes(raw, policy=policy.compat32)
    verp = _verp_rcpt(msg)
    arf = parse_arf(msg)
    if arf is not None:
        return _with(arf, verp)
    if b"notificationType" in raw or b'"eventType"' in raw:
        ses = parse_ses(msg)
        if ses is not None:
            return _with(ses, verp)
    original_id = _original_message_id(msg, raw)
    blocks = status_blocks(msg)
    if blocks:
        results = tuple(_from_block(b, msg) for b in blocks)
        results = tuple(r for r in results if r.recipient)
        if results:
            return Report(ReportType.DSN, results, original_id, verp_rcpt=verp)
    report = _nonstandard(msg, original_id, verp)
    if report.type == ReportType.UNKNOWN and _is_autoreply(msg):
        return Report(ReportType.AUTOREPLY, (), original_id, verp_rcpt=verp)
    return report


def _with(report: Report, verp: str) -> Report:
    return Report(
        report.type, report.results, report.original_message_id, report.feedback_type, verp
    )


def _from_block(block: dict[str, str], msg: Message) -> RecipientResult:
    recipient = address_of(block.get("final-recipient", "")) or address_of(
        block.get("original-recipient", "")
    )
    action = block.get("action", "").strip().lower().split()[0:1]
    act = action[0] if action else ""
    diagnostic = _whole_reply(diagnostic_of(block.get("diagnostic-code", "")), msg)
    status = find_status(block.get("status", ""))
    _, c = _classify_near(msg, recipient, status, diagnostic, act)
    dtype = block.get("diagnostic-code", "").partition(";")[0].strip().lower()
    if dtype == "x-unix" and c.reason in LOCAL_MAILER_REASONS:
        # RFC 3464: an X-Unix diagnostic is a local delivery program's exit or message.
        c = Classification(c.kind, "mailererror", c.status)
    status = c.status or status  # the field or the remote's quoted code (prefer_status)
    return RecipientResult(
        recipient,
        act,
        status,
        diagnostic,
        c.kind,
        c.reason,
        address_of(block.get("original-recipient", "")),
    )


CONTINUED_RE = re.compile(r"^([245]\d\d)-")


def _whole_reply(diagnostic: str, msg: Message) -> str:
    """The whole of a multi-line reply whose Diagnostic-Code kept only its first line (as
    Sendmail writes it), from the session transcript in the human-readable part."""
    m = CONTINUED_RE.match(diagnostic)
    if m is None or re.search(rf"(?<![\d-]){m.group(1)} ", diagnostic):
        return diagnostic
    code, first = m.group(1), " ".join(diagnostic.split())
    lines = [" ".join(line.removeprefix("<<<").split()) for line in _body_text(msg).splitlines()]
    for i, line in enumerate(lines):
        if line.startswith(first) or (first.startswith(line) and line.startswith(code + "-")):
            reply = []
            for part in lines[i:]:
                if not part.startswith((code + "-", code + " ")):
                    break
                reply.append(part)
                if part.startswith(code + " "):
                    return " ".join(reply)
            break
    return diagnostic


def _nonstandard(msg: Message, original_id: str, verp: str) -> Report:
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # flufl's detectors are heuristics over arbitrary input
        temporary, permanent = frozenset(), frozenset()
    found = [(_addr(a), "failed") for a in permanent] + [(_addr(a), "delayed") for a in temporary]
    found = [(a, act) for a, act in found if a]
    body = _body_text(msg)
    excluded = excluded_parties(msg, [body])
    strong, weak = named_recipients(_cut_original(body), excluded)
    named = {a.lower() for a in strong}
    kept = [(a, act) for a, act in found if is_candidate(a, excluded)]
    # flufl's detectors are heuristics: where the text names addresses in a bounce-shaped
    # context, those are the recipients (the ones flufl found too, else all of them). The
    # bounce's own parties go, unless a bounce names nobody else: then it is about the
    # sender's own address.
    if kept and strong:
        acts = {a.lower(): act for a, act in kept}
        default = "delayed" if all(act == "delayed" for _, act in kept) else "failed"
        both = [(a, act) for a, act in kept if a.lower() in named]
        kept = both or [(a, acts.get(a.lower(), default)) for a in strong]
    found = kept or found
    if not found and _looks_like_bounce(msg):
        rest = strong or original_recipients(msg, body[len(_cut_original(body)) :]) or weak
        found = [(a, "failed") for a in rest]
    if not found:
        # A bounce that names nobody we can find: still a bounce (for the VERP token to match),
        # never mistaken for an auto-reply or ignored.
        rtype = ReportType.NONSTANDARD if _looks_like_bounce(msg) else ReportType.UNKNOWN
        return Report(rtype, (), original_id, verp_rcpt=verp)
    results = []
    named = {a for a, _ in found}
    for recipient, action in sorted(set(found)):
        text, c = _classify_near(msg, recipient, "", "", action, named)
        results.append(RecipientResult(recipient, action, c.status, text[:500], c.kind, c.reason))
    return Report(ReportType.NONSTANDARD, tuple(results), original_id, verp_rcpt=verp)


BOUNCE_SENDER = re.compile(
    r"mailer-daemon|postmaster|mail delivery|mail ?administrator", re.IGNORECASE
)
BOUNCE_SUBJECT = re.compile(
    r"fail|undeliver|undelivered|returned|delivery status|not delivered|rejected|"
    r"non[- ]?remis|unzustellbar|could not be delivered|delivery problem|error",
    re.IGNORECASE,
)


# What only a failure report says in its own words: an SMTP reply with an enhanced status,
# or an MTA's stock sentence. Read when neither the sender nor the subject gives it away.
FAILURE_EVIDENCE = re.compile(
    r"(?:^|\s)[45]\d\d[ -][45]\.\d{1,3}\.\d{1,3}(?!\S)|"
    r"\b(?:could ?n[o']t|can ?not|unable to|failed to) (?:be )?deliver|undeliverable|"
    r"\bdelivery (?:to .{1,80} )?(?:has )?(?:permanently )?failed|"
    r"permanent (?:error|failure|fatal)|"
    r"\b(?:user|recipient|mailbox|address) (?:unknown|not found|does not exist)|"
    r"returned to sender|delivery status notification",
    re.IGNORECASE,
)


def _looks_like_bounce(msg: Message) -> bool:
    if BOUNCE_SENDER.search(str(msg.get("from", ""))) or BOUNCE_SUBJECT.search(
        str(msg.get("subject", ""))
    ):
        return True
    # An auto-reply may quote the failure wording of the message it answers.
    return not _is_autoreply(msg, generated=False) and bool(
        FAILURE_EVIDENCE.search(_cut_original(_body_text(msg)))
    )


def _cut_original(body: str) -> str:
    cut = CUT_RE.search(body)
    return body[: cut.start()] if cut else body


def _addr(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    text = text.strip().strip("<>")
    if " " in text or text.startswith("|"):  # "|/bin/prog a@b /home/x": the address in it
        m = ADDRESS_RE.search(text)
        return m.group(1) if m else ""
    return text if "@" in text else ""


def _body_text(msg: Message) -> str:
    """The human-readable part(s) of a bounce, without the returned original message."""
    chunks: list[str] = []
    for part in msg.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            break
        if part.get_content_maintype() == "text" and not part.is_multipart():
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                text = raw.decode(part.get_content_charset() or "utf-8", "replace")
                if part.get_content_subtype() == "html":
                    text = re.sub(r"<[^>]+>", " ", text)
                chunks.append(text)
    if not chunks and isinstance(msg.get_payload(), str):
        # Declared multipart but without a single boundary line: the body is all there is.
        chunks.append(str(msg.get_payload()))
    return "\n".join(chunks)


def _body_near(
    msg: Message, recipient: str, before: bool = False, others: Collection[str] = ()
) -> str:
    """The human-readable text from the recipient's mention on (or the start of the body).

    `before`: start one line earlier, for bounces that put the reason in front of the address
    ("User's mailbox is full: <a@b>") or on the line above it. The text stops where one of
    `others` (the report's other recipients) is named: their reasons are not this one's.
    """
    body = _cut_original(_body_text(msg))
    if recipient:
        lowered = body.lower()
        i = lowered.find(recipient.lower())
        if i >= 0:
            after = i + len(recipient)
            end = i + DIAG_WINDOW
            for other in others:
                j = lowered.find(other.lower(), after)
                if other.lower() != recipient.lower() and 0 <= j < end:
                    end = j
            if before:
                line_start = body.rfind("\n", 0, i) + 1
                if not re.sub(r"[\s<>*:\"'-]", "", body[line_start:i]):
                    above = body[:line_start].rstrip()  # the nearest non-blank line above
                    line_start = above.rfind("\n") + 1
                i = line_start
            return " ".join(body[i:end].split())
    return " ".join(body[: DIAG_WINDOW * 2].split())


def _line_before(msg: Message, recipient: str) -> str:
    """The start of the line where the recipient is first named, up to the address."""
    if not recipient:
        return ""
    body = _cut_original(_body_text(msg))
    i = body.lower().find(recipient.lower())
    return body[body.rfind("\n", 0, i) + 1 : i] if i >= 0 else ""


def _classify_near(
    msg: Message,
    recipient: str,
    status: str,
    text: str,
    action: str,
    others: Collection[str] = (),
) -> tuple[str, Classification]:
    """Classify from the diagnostic, else the text after the address, else one line before."""
    near = _body_near(msg, recipient, others=others)
    text = text or near
    # The stage may be named on the address's own line, before it: ">>> RCPT To:<a@b>".
    lead = _line_before(msg, recipient)
    c = classify(status, text, None, action, find_command(f"{lead} {text} {near}"))
    if c.reason in WEAK_REASONS and recipient:
        wider = _body_near(msg, recipient, before=True, others=others)
        again = classify(status, wider, None, action, find_command(f"{text} {wider}"))
        if again.reason not in WEAK_REASONS:
            return wider, again
    return text, c


def _is_autoreply(msg: Message, generated: bool = True) -> bool:
    """RFC 3834 and its forerunners. `generated`: count "auto-generated" too, which marks
    any automatic message (a bounce as well as a notice), not only a reply."""
    auto = str(msg.get("auto-submitted", "")).strip().lower().split(";")[0].strip()
    if auto and auto != "no" and (generated or auto == "auto-replied"):
        return True
    if msg.get("x-autoreply") or msg.get("x-autorespond") or msg.get("x-vacation"):
        return True
    if str(msg.get("x-autogenerated", "")).strip().lower() == "reply":
        return True
    if str(msg.get("precedence", "")).strip().lower() == "auto_reply":
        return True
    return bool(AUTOREPLY_SUBJECT.search(str(msg.get("subject", ""))))


def _original_message_id(msg: Message, raw: bytes) -> str:
    for part in msg.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                mid = payload[0].get("message-id")
                if mid:
                    return str(mid).strip()
            elif isinstance(payload, str):
                m = MESSAGE_ID_RE.search(payload)
                if m:
                    return m.group(1)
    own = str(msg.get("message-id", "")).strip()
    for m in MESSAGE_ID_RE.finditer(raw.decode("utf-8", "replace")):
        if m.group(1) != own:
            return m.group(1)
    return ""


def _verp_rcpt(msg: Message) -> str:
    for name in ("x-original-to", "delivered-to", "to"):
        for _, addr in getaddresses(msg.get_all(name, [])):
            if "@" in addr:
                return addr
    return ""


__all__ += ["BounceKind"]
