"""`relay bench`: run the side-by-side benchmark harness (relay versus Postfix).

The harness lives in the source tree's `bench/` package, not in the installed `relay` package:
it starts Postfix, smtp-sink and `relay serve` as separate processes and is a developer's tool.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from relay.cli._args import command
from relay.cli._context import Context
from relay.errors import RelayError

SOURCE_TREE = Path(__file__).resolve().parents[2]


def register(sub: Any) -> None:
    p = command(
        sub, "bench", bench,
        "measure relay against Postfix on this machine (`relay bench --help`; bench/README.md)",
        add_help=False, prefix_chars="\x00",  # every argument, --help too, is the harness's
    )  # fmt: skip
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


async def bench(args: argparse.Namespace, ctx: Context) -> int:
    if not (SOURCE_TREE / "bench" / "harness.py").exists():
        raise RelayError(
            "bench: the harness ships with the source tree (bench/), not with an installed "
            "package; run it from a checkout: `make install && .venv/bin/relay bench`"
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE_TREE), env.get("PYTHONPATH")) if p)
    code = "import sys; from bench.harness import main; sys.exit(main(prog='relay bench'))"
    # exec, not a child: Ctrl-C and SIGTERM reach the harness alone, which stops what it started.
    os.execve(sys.executable, [sys.executable, "-c", code, *args.rest], env)
