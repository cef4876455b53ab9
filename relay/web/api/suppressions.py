"""Suppression endpoints: list, add, remove, export (CSV or JSON).

A tenant key works on its tenant's list; an admin key on the global list (or a tenant's with
?tenant=). Adding an existing address refreshes it; removing a missing one is a 404.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from relay.model import SuppressionReason
from relay.store import suppressions, views
from relay.store.db import Database
from relay.web.api._common import (
    Principal,
    authenticate,
    cursor_param,
    email_value,
    existing_tenant,
    iso,
    limit_param,
    page,
    parse_time,
    tenant_scope,
)
from relay.web.errors import ApiError, bad_param
from relay.web.state import state_of


def _scope(request: Request, who: Principal) -> int:
    return suppressions.scope_of(tenant_scope(request, who))


def _item(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "email": row.email,
        "reason": row.reason,
        "source": row.source,
        "scope": "global" if row.scope == 0 else "tenant",
        "tenant": row.tenant_id,
        "created_at": iso(row.created_at),
        "expires_at": iso(row.expires_at),
    }


async def list_suppressions(request: Request) -> JSONResponse:
    who = await authenticate(request)
    raw_email = request.query_params.get("email")
    email = email_value(raw_email) if raw_email is not None else None
    limit, after = limit_param(request), cursor_param(request)
    async with state_of(request).db.read() as conn:
        found = await views.suppressions_page(conn, _scope(request, who), email, after, limit + 1)
    return JSONResponse(page([_item(r) for r in found], [r.id for r in found], limit))


async def read_json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "expected a JSON object")
    return body


def _expires(raw: Any) -> datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise bad_param("expires_at", f"expected an ISO-8601 time, got {raw!r}")
    return parse_time(raw, "expires_at")


async def add_suppression(request: Request) -> JSONResponse:
    who = await authenticate(request)
    body = await read_json(request)
    email = email_value(body.get("email"))
    reason = body.get("reason", SuppressionReason.MANUAL.value)
    if not isinstance(reason, str) or reason not in {r.value for r in SuppressionReason}:
        raise bad_param("reason", f"expected one of {sorted(r.value for r in SuppressionReason)}")
    state = state_of(request)
    if "expires_at" in body:  # null: forever
        expires_at = _expires(body["expires_at"])
    else:  # the reason's lifetime from [bounce] (e.g. hard_bounce_ttl)
        expires_at = suppressions.expiry(state.config.bounce.ttl_s(reason))
    scope = _scope(request, who)
    await existing_tenant(request, who, scope or None)
    async with state.db.write() as conn:
        created = await suppressions.add(
            conn, scope or None, email, reason, source="api", expires_at=expires_at, replace=True
        )
        row = (await views.suppressions_page(conn, scope, email, 0, 1))[0]
    return JSONResponse(_item(row), status_code=201 if created else 200)


async def remove_suppression(request: Request) -> JSONResponse:
    who = await authenticate(request)
    email = email_value(request.query_params.get("email"))
    async with state_of(request).db.write() as conn:
        removed = await suppressions.remove(conn, _scope(request, who) or None, email)
    if not removed:
        raise ApiError(404, "not_found", f"{email} is not on this suppression list")
    return JSONResponse({"email": email, "removed": True})


async def export_suppressions(request: Request) -> Response:
    who = await authenticate(request)
    fmt = request.query_params.get("format", "csv")
    if fmt not in ("csv", "json"):
        raise bad_param("format", f"expected 'csv' or 'json', got {fmt!r}")
    scope = _scope(request, who)
    db = state_of(request).db
    if fmt == "json":
        return StreamingResponse(
            _json_lines(db, scope),
            media_type="application/json",
            headers={"Content-Disposition": 'attachment; filename="suppressions.json"'},
        )

    async def lines() -> AsyncIterator[str]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(["email", "reason", "source", "scope", "created_at", "expires_at"])
        async with db.read() as conn:
            async for row in views.all_suppressions(conn, scope):
                item = _item(row)
                writer.writerow(
                    [
                        item[k] or ""
                        for k in ("email", "reason", "source", "scope", "created_at", "expires_at")
                    ]
                )
                if out.tell() > 65536:
                    yield out.getvalue()
                    out.seek(0)
                    out.truncate()
        yield out.getvalue()

    headers = {"Content-Disposition": 'attachment; filename="suppressions.csv"'}
    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers=headers)


async def _json_lines(db: Database, scope: int) -> AsyncIterator[str]:
    """One JSON array, streamed: every item as `GET /suppressions` shows it."""
    yield "["
    first = True
    async with db.read() as conn:
        async for row in views.all_suppressions(conn, scope):
            yield ("" if first else ",\n") + json.dumps(_item(row))
            first = False
    yield "]\n"


ROUTES = [
    Route("/suppressions/export", export_suppressions, methods=["GET"]),
    Route("/suppressions", list_suppressions, methods=["GET"]),
    Route("/suppressions", add_suppression, methods=["POST"]),
    Route("/suppressions", remove_suppression, methods=["DELETE"]),
]
