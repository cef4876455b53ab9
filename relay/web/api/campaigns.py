"""Campaign endpoints: list, stats, timeline, clicks per link, pause / resume / cancel.

`{id}` is the campaign's name as the app gave it in X-Campaign-ID (URL-encoded). Every
query is limited to the key's tenant; an admin key must name ?tenant= when two tenants use
the same campaign name.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from relay.store import campaigns, stats
from relay.web.api._common import (
    authenticate,
    cursor_param,
    iso,
    limit_param,
    page,
    tenant_scope,
)
from relay.web.api.stats import render
from relay.web.errors import ApiError, bad_param
from relay.web.state import state_of


def _summary(c: campaigns.Campaign, totals: dict[str, int]) -> dict[str, Any]:
    return {
        "id": c.name,
        "tenant": c.tenant_id,
        "state": c.state,
        "created_at": iso(c.created_at),
        "stats": render(totals),
    }


async def list_campaigns(request: Request) -> JSONResponse:
    who = await authenticate(request)
    tenant_id = tenant_scope(request, who)
    limit, after = limit_param(request), cursor_param(request)
    async with state_of(request).db.read() as conn:
        found = await campaigns.list_page(conn, tenant_id, after, limit + 1)
        totals = await stats.by_campaign(conn, [c.id for c in found[:limit]])
    items = [_summary(c, totals.get(c.id, {m: 0 for m in stats.METRICS})) for c in found]
    return JSONResponse(page(items, [c.id for c in found], limit))


async def _campaign(request: Request, conn: Any) -> campaigns.Campaign:
    who = await authenticate(request)
    tenant_id = tenant_scope(request, who)
    name = request.path_params["name"]
    found = await campaigns.find(conn, tenant_id, name)
    if not found:
        raise ApiError(404, "not_found", f"no campaign named {name!r}")
    if len(found) > 1:
        raise bad_param("tenant", "several tenants have a campaign of this name; name one")
    return found[0]


async def get_campaign(request: Request) -> JSONResponse:
    async with state_of(request).db.read() as conn:
        campaign = await _campaign(request, conn)
        totals = await stats.by_campaign(conn, [campaign.id])
    return JSONResponse(_summary(campaign, totals[campaign.id]))


async def timeline(request: Request) -> JSONResponse:
    bucket = request.query_params.get("bucket", "hour")
    if bucket not in ("hour", "day"):
        raise bad_param("bucket", f"expected 'hour' or 'day', got {bucket!r}")
    async with state_of(request).db.read() as conn:
        campaign = await _campaign(request, conn)
        series = await stats.timeline(conn, campaign.id, bucket)
    points = [
        {"start": iso(start), **render({**dict.fromkeys(stats.METRICS, 0), **counts})}
        for start, counts in series
    ]
    return JSONResponse({"id": campaign.name, "bucket": bucket, "points": points})


async def link_clicks(request: Request) -> JSONResponse:
    async with state_of(request).db.read() as conn:
        campaign = await _campaign(request, conn)
        links = await campaigns.link_clicks(conn, campaign.id)
    return JSONResponse({"id": campaign.name, "links": links})


def _action(name: str, verb: Any) -> Any:
    async def handler(request: Request) -> JSONResponse:
        async with state_of(request).db.write() as conn:
            campaign = await _campaign(request, conn)
            changed = await verb(conn, campaign)
            state = (await campaigns.find(conn, campaign.tenant_id, campaign.name))[0].state
        return JSONResponse({"id": campaign.name, "state": state, "deliveries_changed": changed})

    handler.__name__ = f"{name}_campaign"
    return handler


ROUTES = [
    Route("/campaigns", list_campaigns, methods=["GET"]),
    Route("/campaigns/{name:path}/timeline", timeline, methods=["GET"]),
    Route("/campaigns/{name:path}/links", link_clicks, methods=["GET"]),
    Route("/campaigns/{name:path}/pause", _action("pause", campaigns.pause), methods=["POST"]),
    Route("/campaigns/{name:path}/resume", _action("resume", campaigns.resume), methods=["POST"]),
    Route("/campaigns/{name:path}/cancel", _action("cancel", campaigns.cancel), methods=["POST"]),
    Route("/campaigns/{name:path}", get_campaign, methods=["GET"]),
]
