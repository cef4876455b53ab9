"""Message and recipient endpoints: search messages, one message with its deliveries and
events, release a held message, a recipient's history and engagement summary. All scoped to
the key's tenant.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from relay.model import DeliveryState
from relay.store import campaigns, queue, views
from relay.web.api._common import (
    MAX_ID,
    Principal,
    authenticate,
    cursor_param,
    email_value,
    iso,
    limit_param,
    page,
    tenant_scope,
    time_range,
)
from relay.web.errors import ApiError, bad_param
from relay.web.state import state_of


def _event(row: Any) -> dict[str, Any]:
    return {
        "type": row.type,
        "at": iso(row.occurred_at),
        "delivery_id": row.delivery_id,
        "message_id": row.message_id,
        "unique": bool(row.unique_first),
        "machine": bool(row.machine),
        "url": row.url,
        "detail": row.detail,
    }


async def list_messages(request: Request) -> JSONResponse:
    who = await authenticate(request)
    tenant_id = tenant_scope(request, who)
    start, end = time_range(request)
    limit, before = limit_param(request), cursor_param(request)
    status = request.query_params.get("status")
    if status is not None and status not in {s.value for s in DeliveryState}:
        raise bad_param("status", f"expected one of {sorted(s.value for s in DeliveryState)}")
    raw_email = request.query_params.get("email")
    email = email_value(raw_email) if raw_email is not None else None
    async with state_of(request).db.read() as conn:
        campaign_id = None
        name = request.query_params.get("campaign")
        if name is not None:
            found = await campaigns.find(conn, tenant_id, name)
            if not found:
                return JSONResponse({"items": [], "next_cursor": None})
            campaign_id = found[0].id
        found_rows = await views.messages_page(
            conn,
            tenant_id,
            campaign_id=campaign_id,
            email=email,
            status=status,
            start=start,
            end=end,
            before_id=before,
            limit=limit + 1,
        )
    items = [
        {
            "id": r.id,
            "tenant": r.tenant_id,
            "campaign_id": r.campaign_id,
            "message_id_header": r.message_id_header,
            "mail_from": r.mail_from,
            "subject": r.subject,
            "size": r.size,
            "received_at": iso(r.received_at),
        }
        for r in found_rows
    ]
    return JSONResponse(page(items, [r.id for r in found_rows], limit))


def _message_id(request: Request) -> int:
    raw = request.path_params["id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or int(raw) > MAX_ID:
        raise bad_param("id", f"expected a message id (integer), got {raw!r}")
    return int(raw)


async def release_message(request: Request) -> JSONResponse:
    """Send a held message's deliveries (tenant or credential on hold): held → queued."""
    who = await authenticate(request)
    tenant_id = tenant_scope(request, who)
    message_id = _message_id(request)
    db = state_of(request).db
    async with db.read() as conn:
        if await views.message(conn, tenant_id, message_id) is None:
            raise ApiError(404, "not_found", f"no message {message_id}")
    released = await queue.release_held(db, message_id=message_id)
    return JSONResponse({"id": message_id, "released": released})


async def get_message(request: Request) -> JSONResponse:
    who = await authenticate(request)
    tenant_id = tenant_scope(request, who)
    raw = str(_message_id(request))
    async with state_of(request).db.read() as conn:
        msg = await views.message(conn, tenant_id, int(raw))
        if msg is None:
            raise ApiError(404, "not_found", f"no message {raw}")
        delivery_rows = await views.deliveries_of(conn, msg.id)
        event_rows = await views.events_of_message(conn, msg.id)
    return JSONResponse(
        {
            "id": msg.id,
            "tenant": msg.tenant_id,
            "campaign_id": msg.campaign_id,
            "message_id_header": msg.message_id_header,
            "mail_from": msg.mail_from,
            "from": msg.from_header,
            "subject": msg.subject,
            "size": msg.size,
            "received_at": iso(msg.received_at),
            "deliveries": [
                {
                    "id": d.id,
                    "recipient": d.recipient,
                    "type": d.rcpt_type,
                    "state": d.state,
                    "attempts": d.attempts,
                    "next_attempt_at": iso(d.next_attempt_at),
                    "last_reply_code": d.last_reply_code,
                    "last_reply": d.last_reply,
                    "bounce_kind": d.bounce_kind,
                    "account": d.account,
                    "final_at": iso(d.final_at),
                }
                for d in delivery_rows
            ],
            "events": [_event(e) for e in event_rows],
        }
    )


def _tenant_required(request: Request, who: Principal) -> int:
    tenant_id = tenant_scope(request, who)
    if tenant_id is None:
        raise bad_param("tenant", "an admin key must name the tenant (?tenant=<id>)")
    return tenant_id


async def get_recipient(request: Request) -> JSONResponse:
    who = await authenticate(request)
    tenant_id = _tenant_required(request, who)
    key = email_value(request.path_params["email"])
    async with state_of(request).db.read() as conn:
        row = await views.recipient(conn, tenant_id, key)
        history = await views.recipient_deliveries(conn, tenant_id, key)
        events = await views.recipient_events_page(conn, tenant_id, key)
        suppressed = await views.suppression_of(conn, tenant_id, key)
    if row is None and not history and not events:
        raise ApiError(404, "not_found", f"no recipient {key}")
    return JSONResponse(
        {
            "email": key,
            "status": row.status if row else "active",
            "suppressed": {"reason": suppressed.reason, "since": iso(suppressed.created_at)}
            if suppressed
            else None,
            "deliveries": [
                {
                    "id": d.id,
                    "message_id": d.message_id,
                    "campaign_id": d.campaign_id,
                    "state": d.state,
                    "attempts": d.attempts,
                    "last_reply": d.last_reply,
                    "created_at": iso(d.created_at),
                    "final_at": iso(d.final_at),
                }
                for d in history
            ],
            "events": [_event(e) for e in events],
        }
    )


async def recipient_summary(request: Request) -> JSONResponse:
    who = await authenticate(request)
    tenant_id = _tenant_required(request, who)
    key = email_value(request.path_params["email"])
    async with state_of(request).db.read() as conn:
        row = await views.recipient(conn, tenant_id, key)
        states = await views.recipient_states(conn, tenant_id, key)
        suppressed = await views.suppression_of(conn, tenant_id, key)
    if row is None and not states:
        raise ApiError(404, "not_found", f"no recipient {key}")
    counts = {
        name: int(getattr(row, name)) if row else 0
        for name in (
            "messages_count",
            "delivered_count",
            "soft_bounce_count",
            "hard_bounce_count",
            "complaint_count",
            "open_count",
            "click_count",
        )
    }
    return JSONResponse(
        {
            "email": key,
            "status": row.status if row else "active",
            "suppressed": suppressed.reason if suppressed else None,
            "deliveries_by_state": states,
            **counts,
            "first_seen_at": iso(row.first_seen_at) if row else None,
            "last_seen_at": iso(row.last_seen_at) if row else None,
            "last_open_at": iso(row.last_open_at) if row else None,
            "last_click_at": iso(row.last_click_at) if row else None,
            "last_bounce_at": iso(row.last_bounce_at) if row else None,
        }
    )


ROUTES = [
    Route("/messages", list_messages, methods=["GET"]),
    Route("/messages/{id}", get_message, methods=["GET"]),
    Route("/messages/{id}/release", release_message, methods=["POST"]),
    Route("/recipients/{email}/summary", recipient_summary, methods=["GET"]),
    Route("/recipients/{email}", get_recipient, methods=["GET"]),
]
