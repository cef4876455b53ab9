"""Webhook endpoints: list, register (the signing secret is shown once), delete.

Events: delivered, bounced, deferred, failed, opened, clicked, unsubscribed, complained;
an empty list means all. URLs must be http(s).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from relay.store import webhooks
from relay.web.api._common import (
    authenticate,
    cursor_param,
    existing_tenant,
    int_param,
    iso,
    limit_param,
    page,
    tenant_scope,
)
from relay.web.api.suppressions import read_json
from relay.web.errors import ApiError, bad_param
from relay.web.state import state_of


def _item(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant": row.tenant_id,
        "url": row.url,
        "events": list(row.events or []),
        "active": bool(row.active),
        "created_at": iso(row.created_at),
    }


async def list_webhooks(request: Request) -> JSONResponse:
    who = await authenticate(request)
    limit, after = limit_param(request), cursor_param(request)
    async with state_of(request).db.read() as conn:
        found = await webhooks.list_page(conn, tenant_scope(request, who), after, limit + 1)
    return JSONResponse(page([_item(r) for r in found], [r.id for r in found], limit))


async def add_webhook(request: Request) -> JSONResponse:
    who = await authenticate(request)
    tenant_id = tenant_scope(request, who)
    if tenant_id is None:
        raise bad_param("tenant", "an admin key must name the tenant (?tenant=<id>)")
    await existing_tenant(request, who, tenant_id)
    body = await read_json(request)
    url = body.get("url")
    if not isinstance(url, str):
        raise bad_param("url", "expected an http(s) URL")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise bad_param("url", "expected an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise bad_param("url", "expected an http(s) URL")
    events = body.get("events", [])
    if not isinstance(events, list) or not all(
        isinstance(e, str) and e in webhooks.EVENT_TYPES for e in events
    ):
        raise bad_param("events", f"expected a list of {sorted(webhooks.EVENT_TYPES)}")
    async with state_of(request).db.write() as conn:
        hook_id, secret = await webhooks.create(conn, tenant_id, url, events)
        row = (await webhooks.list_page(conn, tenant_id, hook_id - 1, 1))[0]
    return JSONResponse({**_item(row), "secret": secret}, status_code=201)


async def delete_webhook(request: Request) -> JSONResponse:
    who = await authenticate(request)
    hook_id = int_param(request, "id", minimum=1)
    async with state_of(request).db.write() as conn:
        removed = await webhooks.remove(conn, tenant_scope(request, who), hook_id)
    if not removed:
        raise ApiError(404, "not_found", f"no webhook {hook_id}")
    return JSONResponse({"id": hook_id, "removed": True})


ROUTES = [
    Route("/webhooks", list_webhooks, methods=["GET"]),
    Route("/webhooks", add_webhook, methods=["POST"]),
    Route("/webhooks", delete_webhook, methods=["DELETE"]),
]
