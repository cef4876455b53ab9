"""`relay bounces classify`: read .eml paths on stdin, print one JSON line per path.

Each line: file, type, recipients, status, action, kind, reason (the format scored by
../shared/bounces/evaluate.py). Reads files only; an unreadable path gets an `error` field.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from relay.bounce import Report, parse
from relay.cli._args import command, group
from relay.cli._context import Context
from relay.cli._output import dumps


def register(sub: Any) -> None:
    inner = group(sub, "bounces", "bounce classification tools")
    command(
        inner,
        "classify",
        classify_paths,
        "classify bounce messages: .eml paths on stdin, one JSON line out per path",
    )


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
