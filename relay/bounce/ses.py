"""Amazon SES notifications (bounce, complaint, delivery) mailed as JSON by SNS.

Input: a parsed `email.message.Message`; output: a `Report` (DSN for bounces and deliveries,
ARF for complaints), or None when the message holds no SES notification. The JSON names each
recipient with its `action`, `status` and `diagnosticCode`; the diagnostic is classified by
the same rules as any other report. Pure.
"""

from __future__ import annotations

import json
from email.message import Message
from typing import Any

from relay.bounce.classify import classify, find_command
from relay.bounce.report import RecipientResult, Report, ReportType
from relay.model import BounceKind

MARKER = "notificationType"


def parse_ses(msg: Message) -> Report | None:
    data = _notification(msg)
    if data is None:
        return None
    kind = str(data.get("notificationType") or data.get("eventType") or "").lower()
    message_id = _original_message_id(_dict(data.get("mail")))
    if kind == "complaint":
        complaint = _dict(data.get("complaint"))
        results = tuple(
            RecipientResult(addr, "", "", "", BounceKind.COMPLAINT, "feedback")
            for addr in _addresses(complaint.get("complainedRecipients"))
        )
        feedback = str(complaint.get("complaintFeedbackType") or "abuse").lower()
        return Report(ReportType.ARF, results, message_id, feedback)
    if kind == "delivery":
        delivery = _dict(data.get("delivery"))
        results = tuple(
            RecipientResult(a, "delivered", "2.0.0", "", BounceKind.NOT_BOUNCE, "delivered")
            for a in delivery.get("recipients") or []
            if isinstance(a, str) and "@" in a
        )
        return Report(ReportType.DSN, results, message_id)
    if kind != "bounce":
        return None
    bounce = _dict(data.get("bounce"))
    transient = str(bounce.get("bounceType", "")).lower() == "transient"
    out = []
    for item in bounce.get("bouncedRecipients") or []:
        if not isinstance(item, dict) or "@" not in str(item.get("emailAddress", "")):
            continue
        action = str(item.get("action") or ("delayed" if transient else "failed")).lower()
        status = str(item.get("status") or "")
        diagnostic = str(item.get("diagnosticCode") or "")
        c = classify(status, diagnostic, None, action, find_command(diagnostic))
        out.append(
            RecipientResult(
                str(item["emailAddress"]).strip(),
                action,
                c.status or status,
                diagnostic,
                c.kind,
                c.reason,
            )
        )
    return Report(ReportType.DSN, tuple(out), message_id)


def _notification(msg: Message) -> dict[str, Any] | None:
    for part in msg.walk():
        if part.get_content_maintype() != "text" or part.is_multipart():
            continue
        raw = part.get_payload(decode=True)
        if not isinstance(raw, bytes):
            continue
        text = raw.decode(part.get_content_charset() or "utf-8", "replace")
        start = text.find("{")
        if start < 0 or MARKER not in text:
            continue
        end = text.rfind("}") + 1
        body = text[start:end]
        # Long lines come folded (newline + one space), even inside JSON strings.
        for candidate in (body, body.replace("\n ", ""), body.replace("\n", "")):
            try:
                data = json.JSONDecoder().raw_decode(candidate)[0]
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("Message"), str):
                try:  # an SNS envelope around the SES notification
                    data = json.loads(data["Message"])
                except ValueError:
                    continue
            if isinstance(data, dict) and ("notificationType" in data or "eventType" in data):
                return data
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _addresses(items: Any) -> list[str]:
    return [
        str(i["emailAddress"]).strip()
        for i in items or []
        if isinstance(i, dict) and "@" in str(i.get("emailAddress", ""))
    ]


def _original_message_id(mail: dict[str, Any]) -> str:
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
            return str(header.get("value", "")).strip()
    common = _dict(mail.get("commonHeaders"))
    return str(common.get("messageId", "") or "").strip()
