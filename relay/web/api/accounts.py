"""Pool account endpoints (admin keys only: the smarthost pool serves every tenant).

GET /accounts: each `[[delivery.accounts]]` entry with today's usage, limits, warm-up day,
health (consecutive failures) and paused state. POST /accounts/{id}/pause|resume (id = the
account's name) sets the `accounts` row the scheduler reads.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from relay.config import AccountConfig
from relay.store import views
from relay.web.api._common import Principal, authenticate, iso
from relay.web.api.suppressions import read_json
from relay.web.errors import ApiError
from relay.web.state import state_of


def _admin(who: Principal) -> None:
    if not who.is_admin:
        raise ApiError(
            403, "forbidden", "pool accounts are shared by all tenants: use an admin key"
        )


def _limit_today(account: AccountConfig, warmup_day: int | None) -> int:
    if account.warmup and warmup_day is not None:
        return account.warmup[min(warmup_day, len(account.warmup)) - 1]
    return account.daily_limit


async def list_accounts(request: Request) -> JSONResponse:
    _admin(await authenticate(request))
    state = state_of(request)
    now = state.clock()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    configured = state.config.delivery.accounts
    async with state.db.read() as conn:
        rows = await views.account_rows(conn)
        usage = await views.account_usage(conn, [a.name for a in configured], today)
    items: list[dict[str, Any]] = []
    for account in configured:
        row = rows.get(account.name)
        started = row.warmup_started_at if row else None
        day = (now - started).days + 1 if started else None
        used = usage.get(account.name)
        items.append(
            {
                "id": account.name,
                "host": account.host,
                "port": account.port,
                "weight": account.weight,
                "sent_today": int(used.count) if used else 0,
                "bounces_today": int(used.bounces) if used else 0,
                "daily_limit": _limit_today(account, day),
                "per_minute": account.per_minute,
                "warmup_day": day,
                "consecutive_failures": int(row.consecutive_failures) if row else 0,
                "paused": bool(row.paused) if row else False,
                "paused_reason": row.paused_reason if row else None,
                "paused_until": iso(row.paused_until) if row else None,
            }
        )
    return JSONResponse({"items": items, "next_cursor": None})


def _set(paused: bool) -> Any:
    async def handler(request: Request) -> JSONResponse:
        _admin(await authenticate(request))
        state = state_of(request)
        name = request.path_params["name"]
        if name not in {a.name for a in state.config.delivery.accounts}:
            raise ApiError(404, "not_found", f"no pool account {name!r} in [[delivery.accounts]]")
        reason = None
        if paused:
            body = await read_json(request) if await request.body() else {}
            reason = str(body.get("reason") or "paused by operator")[:255]
        async with state.db.write() as conn:
            await views.set_account_paused(conn, name, paused, reason, state.clock())
        return JSONResponse({"id": name, "paused": paused, "paused_reason": reason})

    handler.__name__ = "pause_account" if paused else "resume_account"
    return handler


ROUTES = [
    Route("/accounts", list_accounts, methods=["GET"]),
    Route("/accounts/{name}/pause", _set(True), methods=["POST"]),
    Route("/accounts/{name}/resume", _set(False), methods=["POST"]),
]
