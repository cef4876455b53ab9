"""Subcommands whose issue has not landed yet: they say so and exit 1, never pretend."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from relay.cli._args import command
from relay.cli._context import Context

PENDING = {
    "bench": "the benchmark harness",
}


def register(sub: Any) -> None:
    for name, what in PENDING.items():
        p = command(sub, name, not_yet, f"{what}: not yet available in this version")
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


async def not_yet(args: argparse.Namespace, ctx: Context) -> int:
    print(f"relay {args.command}: not yet available in this version", file=sys.stderr)
    return 1
