"""`relay prune`: apply the retention settings (old bodies, old events, expired suppressions)."""

from __future__ import annotations

import argparse
from typing import Any

from relay.cli._args import command, positive_int
from relay.cli._context import Context
from relay.cli._output import emit_one
from relay.cli._progress import progress
from relay.store.retention import prune


def register(sub: Any) -> None:
    p = command(
        sub,
        "prune",
        run_prune,
        "delete raw bodies and events past their retention, in small batches",
        json=True,
    )
    p.add_argument(
        "--messages-days", type=positive_int, help="override retention.messages_days"
    )
    p.add_argument("--events-days", type=positive_int, help="override retention.events_days")
    p.add_argument(
        "--batch", type=positive_int, default=500, help="rows per transaction (default 500)"
    )


async def run_prune(args: argparse.Namespace, ctx: Context) -> int:
    r = ctx.config.retention
    messages_days = r.messages_days if args.messages_days is None else args.messages_days
    events_days = r.events_days if args.events_days is None else args.events_days
    done = {"bodies": 0, "events": 0}

    def describe() -> str:
        return f"pruned {done['bodies']} bodies, {done['events']} events"

    with progress(describe, enabled=not args.json) as refresh:

        def counted(kind: str, n: int) -> None:
            done[kind] += n
            refresh()

        async with ctx.database() as db:
            result = await prune(db, messages_days, events_days, args.batch, progress=counted)
    record = {
        "bodies": result.bodies,
        "events": result.events,
        "expired_suppressions": result.suppressions,
        "messages_days": messages_days,
        "events_days": events_days,
    }
    emit_one(
        record,
        args.json,
        [
            f"pruned {result.bodies} message bodies older than {messages_days} days, "
            f"{result.events} events older than {events_days} days, "
            f"{result.suppressions} expired suppressions"
        ],
    )
    return 0
