"""`relay bounces classify|replay|list`: bounce tools.

`classify` reads .eml paths on stdin and prints one JSON line per path: file, type,
recipients, status, action, kind, reason (the format scored by ../shared/bounces/evaluate.py);
it reads files only, and an unreadable path gets an `error` field. `replay` processes stored
inbound reports whose processing never finished (the database failed half-way); `list`
shows stored reports (`--unmatched`: those that matched no delivery, kept for the operator).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import structlog

from relay import inbound
from relay.bounce import Report, parse
from relay.cli._args import command, group
from relay.cli._context import Context
from relay.cli._output import dumps, emit
from relay.render.tokens import load_keyring
from relay.store import reports


def register(sub: Any) -> None:
    inner = group(sub, "bounces", "bounce classification tools")
    command(
        inner,
        "classify",
        classify_paths,
        "classify bounce messages: .eml paths on stdin, one JSON line out per path",
    )
    p = command(
        inner,
        "replay",
        replay,
        "process again stored inbound reports whose processing never finished",
        json=True,
    )
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.add_argument("--id", type=int, help="this stored report, even if it was processed")
    p = command(
        inner,
        "list",
        list_reports,
        "stored inbound reports (DSNs, complaints, unsubscribes), newest first",
        json=True,
    )
    p.add_argument("--unmatched", action="store_true", help="only those that matched no delivery")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.add_argument("--before", type=int, default=0, metavar="ID", help="older than this id")


def summarize(path: str, report: Report) -> dict[str, Any]:
    failed = [r for r in report.results if r.action in ("failed", "delayed", "")]
    chosen = failed or list(report.results)
    first = chosen[0] if chosen else None
    kind = first.kind if first else report.kind
    return {
        "file": path,
        "type": str(report.type),
        "recipients": [r.recipient for r in chosen],
        "status": (first.status or None) if first else None,
        "action": (first.action or None) if first else None,
        "kind": str(kind),
        "reason": (first.reason or None)
        if first
        else (
            "vacation"
            if report.type == "autoreply"
            else "feedback"
            if report.type == "arf"
            else None
        ),
        "message_id": report.original_message_id or None,
    }


def _classify_all(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        path = line.strip()
        if not path:
            continue
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            out.append(dumps({"file": path, "error": e.strerror or str(e)}))
            continue
        out.append(dumps(summarize(path, parse(raw))))
    return out


async def classify_paths(args: argparse.Namespace, ctx: Context) -> int:
    lines = await asyncio.to_thread(sys.stdin.readlines)
    for line in await asyncio.to_thread(_classify_all, lines):
        print(line)
    return 0


async def replay(args: argparse.Namespace, ctx: Context) -> int:
    # Processing logs what it applies; stdout is for the result, so logs go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    keyring = load_keyring(ctx.config)
    async with ctx.database() as db:
        done = await inbound.replay(db, keyring, ctx.config.bounce, max(args.limit, 1), args.id)
    rows = [
        {
            "id": report_id,
            "processed": result is not None,
            "type": str(result.report.type) if result else None,
            "applied": [a.delivery_id for a in result.applied] if result else [],
            "unmatched": [u.recipient for u in result.unmatched] if result else [],
        }
        for report_id, result in done
    ]
    emit(rows, ["id", "processed", "type", "applied", "unmatched"], args.json)
    return 0 if all(r["processed"] for r in rows) else 1


async def list_reports(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database() as db, db.read() as conn:
        rows = await reports.list_inbound(
            conn, unmatched=args.unmatched, limit=max(args.limit, 1), before_id=args.before
        )
    columns = ["id", "received_at", "rcpt", "mail_from", "type", "kind", "matched", "unmatched"]
    emit(rows, columns, args.json)
    return 0
