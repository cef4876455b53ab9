"""`relay status`: the state of the queue, recent outcomes, suppressions and the pool."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from relay.cli._args import command
from relay.cli._context import Context
from relay.cli._output import cell, print_json, print_table
from relay.errors import SchemaError, StoreUnavailable
from relay.store import status as store
from relay.store.db import check_schema, ping


def register(sub: Any) -> None:
    command(
        sub,
        "status",
        run_status,
        "queue depth, oldest queued delivery, last hour's outcomes, suppressions, pool",
        json=True,
    )


def _age(seconds: int | None) -> str:
    """3725 -> '1h02m': the two largest units, like `uptime`."""
    if seconds is None:
        return "-"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _ago(seconds: int | None) -> str:
    return "none yet" if seconds is None else f"{_age(seconds)} ago"


async def run_status(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database(check=False) as db:
        try:
            await ping(db.engine)
        except StoreUnavailable as e:
            # The first thing an operator needs to know, in the same shape as a full report.
            if args.json:
                print_json({"database": {"reachable": False, "error": str(e)}})
            else:
                print(f"database: UNREACHABLE: {e}")
            return 1
        try:
            await check_schema(db.engine)
        except SchemaError as e:  # reachable, but nothing to report on until it is migrated
            if args.json:
                print_json({"database": {"reachable": True, "current": False, "error": str(e)}})
            else:
                print(f"database: reachable, but {e}")
            return 1
        report = await store.gather(db)
    limits = {a.name: a.daily_limit for a in ctx.config.delivery.accounts}
    for account in report["accounts"]:
        account["daily_limit"] = limits.get(account["name"])  # None: no longer configured
        account["health"] = _health(account)
    if args.json:
        print_json(report)
        return 0
    d, q = report["database"], report["queue"]
    schema = "current" if d["current"] else f"at {d['revision']}, code expects {d['head']}"
    print(
        f"database: reachable in {d['query_ms']} ms, schema {schema}; newest message "
        f"{_ago(d['newest_message_age_s'])}, newest event {_ago(d['newest_event_age_s'])}"
    )
    print(f"queue: {q['in_queue']} in the queue; oldest queued {_age(q['oldest_queued_age_s'])}")
    for state, count in q["by_state"].items():
        print(f"  {state:<11} {count}")
    hour = report["last_hour"]
    print("last hour: " + (", ".join(f"{k} {v}" for k, v in hour.items()) or "no events"))
    rates = report["rates_last_hour"]
    shown = {k: "-" if v is None else f"{v:.2%}" for k, v in rates.items()}
    print(f"  bounce rate {shown['bounce']}, complaint rate {shown['complaint']}")
    sup = report["suppressions"]
    print("suppressions: " + (", ".join(f"{k} {v}" for k, v in sup.items()) or "none"))
    if report["accounts"]:
        print("accounts:")
        for a in report["accounts"]:
            a["usage"] = f"{a['sent_today']}/{a['daily_limit'] or '∞'}"
        print_table(report["accounts"], ["name", "health", "usage", "consecutive_failures"])
    else:
        print("accounts: none (delivery mode is not smarthost, or nothing sent yet)")
    return 0


def _health(account: dict[str, Any]) -> str:
    if account["paused"]:
        at = account["paused_until"]
        until = f" until {cell(datetime.fromisoformat(at))} UTC" if at else ""
        return f"paused ({account['paused_reason'] or 'by an operator'}){until}"
    if account["consecutive_failures"]:
        return f"failing ({account['consecutive_failures']} in a row)"
    if account["daily_limit"] and account["sent_today"] >= account["daily_limit"]:
        return "daily limit reached"
    return "ok"
