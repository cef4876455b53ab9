"""POST /api/v1/messages: send a message over HTTP through the same intake as SMTP.

Input: JSON {from, to, cc, bcc, subject, text, html, headers, campaign}. Output: 202 with
the message id and one delivery per recipient, once committed. The MIME message is built
with the stdlib email package (UTF-8, quoted-printable or base64 as it chooses,
multipart/alternative for text + html); limits are the SMTP ones (smtp.max_recipients,
smtp.max_message_size) and the tenant's sender domains.
"""

from __future__ import annotations

import email.utils
import json
import re
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.policy import default as default_policy
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from relay.addresses import InvalidAddress, normalize
from relay.errors import NotFound
from relay.intake import Rejected, sender_domain_allowed
from relay.store import tenants, views
from relay.web.api._common import authenticate, tenant_scope
from relay.web.errors import ApiError, bad_param
from relay.web.state import state_of

FIELDS = {"from", "to", "cc", "bcc", "subject", "text", "html", "headers", "campaign"}
# Set from the JSON fields (or by MIME itself); a custom header may not contradict them.
RESERVED = {
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
}
_SMTP_CODES = re.compile(r"^\d{3} \d\.\d{1,3}\.\d{1,3} ")
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 ftext, within one line


def _addresses(field: str, value: Any) -> list[Address]:
    """'a@x', 'Name <a@x>' or a list of those → parsed addresses; 400 naming the field."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise bad_param(field, "expected an address or a list of addresses")
    found: list[Address] = []
    for item in items:
        if "\r" in item or "\n" in item:
            raise bad_param(field, "an address may not contain a line break")
        try:
            parsed = default_policy.header_factory(field, item).addresses
        except (ValueError, IndexError, TypeError, AttributeError):
            parsed = ()  # the stdlib parser raises AttributeError on e.g. '.:' (a group)
        if len(parsed) != 1 or not parsed[0].addr_spec or "@" not in parsed[0].addr_spec:
            raise bad_param(field, f"{item!r} is not one email address")
        try:
            normalize(parsed[0].addr_spec)
        except InvalidAddress as e:
            raise bad_param(field, str(e)) from None
        found.append(parsed[0])
    return found


def _text(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise bad_param(field, "expected a string")
    return value


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_param("headers", "expected an object of header name → string value")
    for name, text in value.items():
        if not _HEADER_NAME.match(name):
            raise bad_param("headers", f"{name!r} is not a header field name")
        if name.lower() in RESERVED:
            raise bad_param("headers", f"set {name!r} through its own field, not in headers")
        if not isinstance(text, str) or "\r" in text or "\n" in text or len(text) > 998:
            raise bad_param("headers", f"{name}: expected one line of text (at most 998 chars)")
    return dict(value)


def build_message(body: dict[str, Any], campaign_header: str) -> tuple[str, list[str], bytes, bool]:
    """(envelope sender, envelope recipients, raw RFC 5322 bytes, needs SMTPUTF8)."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise bad_param(unknown[0], f"unknown field; expected some of {sorted(FIELDS)}")
    senders = _addresses("from", body.get("from"))
    if len(senders) != 1:
        raise bad_param("from", "exactly one sender address is required")
    to, cc, bcc = (_addresses(f, body.get(f)) for f in ("to", "cc", "bcc"))
    subject, text, html = (_text(body, f) for f in ("subject", "text", "html"))
    if subject is not None and ("\r" in subject or "\n" in subject):
        raise bad_param("subject", "may not contain a line break")
    if text is None and html is None:
        raise bad_param("text", "give text, html or both")
    campaign = _text(body, "campaign")
    if campaign is not None and (not campaign.strip() or "\n" in campaign or "\r" in campaign):
        raise bad_param("campaign", "expected a non-empty name on one line")
    extra = _headers(body.get("headers"))

    msg = EmailMessage()
    msg["From"] = senders[0]
    if to:
        msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject or ""
    msg["Date"] = email.utils.formatdate(usegmt=True)
    if campaign is not None:
        msg[campaign_header] = campaign.strip()
    for name, value in extra.items():
        msg[name] = value
    if text is not None:
        msg.set_content(text)
    if html is not None:
        if text is None:
            msg.set_content(html, subtype="html")
        else:
            msg.add_alternative(html, subtype="html")
    # Bcc never appears in the message: it is the envelope alone (as intake treats SMTP).
    recipients: list[str] = []
    for addr in (*to, *cc, *bcc):
        if addr.addr_spec.lower() not in (r.lower() for r in recipients):
            recipients.append(addr.addr_spec)
    if not recipients:
        raise bad_param("to", "at least one recipient (to, cc or bcc) is required")
    sender = senders[0].addr_spec
    utf8 = not all(a.isascii() for a in (sender, *recipients))
    try:
        raw = msg.as_bytes(policy=SMTPUTF8 if utf8 else SMTP)
    except (ValueError, TypeError) as e:  # e.g. a header the email package cannot encode
        raise ApiError(400, "invalid_message", f"cannot build the message: {e}") from None
    return sender, recipients, raw, utf8


async def send_message(request: Request) -> JSONResponse:
    who = await authenticate(request)
    tenant_id = tenant_scope(request, who)
    if tenant_id is None:
        raise bad_param("tenant", "an admin key must name the tenant (?tenant=<id>)")
    state = state_of(request)
    smtp = state.config.smtp
    limit = smtp.max_message_size * 2  # JSON escaping may double the message's size
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ApiError(413, "too_large", f"request body over {limit} bytes")
    raw_body = await request.body()
    if len(raw_body) > limit:
        raise ApiError(413, "too_large", f"request body over {limit} bytes")
    try:
        body = json.loads(raw_body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "expected a JSON object")
    sender, recipients, raw, utf8 = build_message(body, smtp.campaign_header)
    if len(recipients) > smtp.max_recipients:
        raise bad_param(
            "to", f"{len(recipients)} recipients; at most {smtp.max_recipients} per message"
        )
    if len(raw) > smtp.max_message_size:
        raise ApiError(
            413, "too_large", f"the message is {len(raw)} bytes; at most {smtp.max_message_size}"
        )
    try:
        tenant = await tenants.get_tenant_by_id(state.db, tenant_id)
    except NotFound:
        raise ApiError(404, "not_found", f"no tenant {tenant_id}") from None
    domain = sender.rpartition("@")[2]
    if not sender_domain_allowed(tenant, domain):
        raise ApiError(403, "sender_not_allowed", f"from: domain {domain!r} is not allowed")
    try:
        accepted = await state.intake.submit(tenant, None, sender, recipients, raw, utf8)
    except Rejected as e:
        status = 403 if " 5.7." in e.reply else 400
        raise ApiError(status, "rejected", _SMTP_CODES.sub("", e.reply)) from None
    async with state.db.read() as conn:
        rows = await views.deliveries_of(conn, accepted.message_id)
    return JSONResponse(
        {
            "id": accepted.message_id,
            "message_id_header": accepted.message_id_header,
            "deliveries": [
                {"id": d.id, "recipient": d.recipient, "type": d.rcpt_type, "state": d.state}
                for d in rows
            ],
        },
        status_code=202,
    )


ROUTES = [Route("/messages", send_message, methods=["POST"])]
