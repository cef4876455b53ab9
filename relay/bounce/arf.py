"""RFC 5965 feedback reports (ARF): a recipient complained about a message.

Input: a parsed `email.message.Message`; output: a `Report` of type ARF, or None when the
message is not a feedback report.
"""

from __future__ import annotations

import re
from email.message import Message
from email.utils import getaddresses

from relay.bounce.report import RecipientResult, Report, ReportType
from relay.model import BounceKind

COMPLAINT_SUBJECT = re.compile(r"complaint|abuse report|spam report", re.IGNORECASE)


def parse_arf(msg: Message) -> Report | None:
    if msg.get_content_type() != "multipart/report":
        return _nonstandard_complaint(msg)
    if str(msg.get_param("report-type") or "").lower() != "feedback-report":
        if not any(p.get_content_type() == "message/feedback-report" for p in msg.walk()):
            return None
    fields: dict[str, str] = {}
    original: Message | None = None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/feedback-report":
            fields = _fields(part)
        elif ctype in ("message/rfc822", "text/rfc822-headers") and original is None:
            original = _inner(part)
    recipients = [a for _, a in getaddresses([fields.get("original-rcpt-to", "")]) if "@" in a]
    if not recipients and original is not None:
        recipients = [a for _, a in getaddresses(original.get_all("to", [])) if "@" in a]
    results = tuple(
        RecipientResult(r, "", "", "", BounceKind.COMPLAINT, "feedback") for r in recipients
    )
    return Report(
        ReportType.ARF,
        results,
        original_message_id=str(original.get("message-id", "")).strip() if original else "",
        feedback_type=fields.get("feedback-type", "abuse").strip().lower(),
    )


def _fields(part: Message) -> dict[str, str]:
    payload = part.get_payload()
    text = ""
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                text += "".join(f"{k}: {v}\n" for k, v in sub.items())
    else:
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        name = key.strip().lower()
        if sep and name == "original-rcpt-to" and name in out:
            out[name] += ", " + value.strip()  # RFC 5965: one field per recipient
        elif sep and name:
            out.setdefault(name, value.strip())
    return out


def _inner(part: Message) -> Message | None:
    from email import message_from_string

    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    return message_from_string(text)


def _nonstandard_complaint(msg: Message) -> Report | None:
    """Pre-ARF feedback loops (e.g. Hotmail JMRP): a complaint subject plus the original."""
    if not msg.is_multipart() or not COMPLAINT_SUBJECT.search(str(msg.get("subject", ""))):
        return None
    for part in msg.walk():
        if part.get_content_type() == "message/rfc822":
            original = _inner(part)
            if original is None:
                return None
            header = original.get("x-hmxmroriginalrecipient") or ", ".join(
                original.get_all("to", [])
            )
            recipients = [a for _, a in getaddresses([str(header)]) if "@" in a]
            results = tuple(
                RecipientResult(r, "", "", "", BounceKind.COMPLAINT, "feedback") for r in recipients
            )
            return Report(
                ReportType.ARF,
                results,
                original_message_id=str(original.get("message-id", "")).strip(),
                feedback_type="abuse",
            )
    return None
