"""GET /api/v1/stats/overview: the tenant's numbers over a time range, from counters.

Input: ?from=&to= (ISO-8601; hour resolution) and for admin keys ?tenant=. Output: sent,
delivered, bounces, failures, opens/clicks (unique, total, human, machine), unsubscribes,
complaints and rates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from relay.store import stats
from relay.web.api._common import authenticate, iso, tenant_scope, time_range
from relay.web.state import state_of


def _engagement(t: Mapping[str, int], kind: str) -> dict[str, int]:
    return {
        "unique": t[f"{kind}_unique"],
        "total": t[kind],
        "human": t[f"{kind}_human"],
        "unique_human": t[f"{kind}_unique_human"],
        "machine": t[kind] - t[f"{kind}_human"],
    }


def render(t: Mapping[str, int]) -> dict[str, Any]:
    """The stats JSON shared by the overview and the campaign endpoints."""
    return {
        "sent": t["sent"],
        "delivered": t["delivered"],
        "bounced": {
            "hard": t["bounced_hard"],
            "soft": t["bounced_soft"],
            "total": t["bounced_hard"] + t["bounced_soft"],
        },
        "failed": t["failed"],
        "deferred": t["deferred"],
        "suppressed": t["suppressed"],
        "opens": _engagement(t, "opened"),
        "clicks": _engagement(t, "clicked"),
        "unsubscribes": t["unsubscribed"],
        "complaints": t["complained"],
        "rates": stats.rates(t),
    }


async def overview(request: Request) -> JSONResponse:
    who = await authenticate(request)
    tenant_id = tenant_scope(request, who)
    start, end = time_range(request)
    async with state_of(request).db.read() as conn:
        totals = await stats.totals(conn, tenant_id, start, end)
    body = {"tenant": tenant_id, "from": iso(start), "to": iso(end), **render(totals)}
    return JSONResponse(body)


ROUTES = [Route("/stats/overview", overview, methods=["GET"])]
