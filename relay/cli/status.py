"""`relay status`: the state of the queue, recent outcomes, suppressions and the pool."""

from __future__ import annotations

import argparse
from typing import Any

from relay.cli._args import command
from relay.cli._context import Context
from relay.cli._output import print_json, print_table
from relay.store import status as store


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


async def run_status(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database(check=False) as db:
        report = await store.gather(db)
    if args.json:
        print_json(report)
        return 0
    d, q = report["database"], report["queue"]
    schema = "current" if d["current"] else f"at {d['revision']}, code expects {d['head']}"
    print(f"database: reachable, schema {schema}")
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
    print("accounts:")
    print_table(report["accounts"], ["name", "paused", "paused_reason", "consecutive_failures"])
    return 0
