"""`relay accounts list|pause|resume`: the smarthost pool as every delivery node sees it."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from relay.cli._args import command, group
from relay.cli._context import Context
from relay.cli._output import emit, emit_one
from relay.config import parse_duration
from relay.errors import ConfigError
from relay.store import accounts as store
from relay.store.db import utcnow
from relay.transport.pool import limit_for


def register(sub: Any) -> None:
    a = group(sub, "accounts", "smarthost accounts: usage, limits, pause and resume")
    command(a, "list", accounts_list, "list pool accounts with today's usage and limit", json=True)
    p = command(a, "pause", accounts_pause, "stop sending through an account", json=True)
    p.add_argument("name")
    p.add_argument("--reason", default="paused by operator")
    p.add_argument(
        "--for", dest="duration", metavar="DURATION", help="e.g. 2h (default: until resumed)"
    )
    p = command(a, "resume", accounts_resume, "send through a paused account again", json=True)
    p.add_argument("name")


async def accounts_list(args: argparse.Namespace, ctx: Context) -> int:
    configured = {a.name: a for a in ctx.config.delivery.accounts}
    now = utcnow()
    async with ctx.database() as db:
        await store.ensure(db, configured, now)
        rows = await store.read_all(db, now)
    records = []
    for r in rows:
        record = asdict(r)
        account = configured.get(r.name)
        record["configured"] = account is not None
        record["limit_today"] = limit_for(account, r.warmup_started_at, now) if account else None
        records.append(record)
    columns = [
        "name",
        "paused",
        "paused_reason",
        "paused_until",
        "sent_today",
        "limit_today",
        "consecutive_failures",
    ]
    emit(records, columns, args.json)
    return 0


async def accounts_pause(args: argparse.Namespace, ctx: Context) -> int:
    now = utcnow()
    until = None
    if args.duration:
        try:
            until = now + timedelta(seconds=parse_duration(args.duration))
        except ValueError as e:
            raise ConfigError("--for", str(e)) from None
    async with ctx.database() as db:
        await store.ensure(db, [a.name for a in ctx.config.delivery.accounts], now)
        await store.set_paused(db, args.name, True, now, args.reason, until)
    emit_one(
        {"name": args.name, "paused": True, "paused_until": until},
        args.json,
        [f"account {args.name!r} paused" + (f" until {until:%Y-%m-%d %H:%M} UTC" if until else "")],
    )
    return 0


async def accounts_resume(args: argparse.Namespace, ctx: Context) -> int:
    now = utcnow()
    async with ctx.database() as db:
        await store.ensure(db, [a.name for a in ctx.config.delivery.accounts], now)
        await store.set_paused(db, args.name, False, now)
    emit_one({"name": args.name, "paused": False}, args.json, [f"account {args.name!r} resumed"])
    return 0
