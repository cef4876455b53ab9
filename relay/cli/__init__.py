"""The `relay` command: parses arguments, runs one subcommand, prints, picks the exit code.

Each subcommand lives in a module of this package that exposes `register(subparsers)`;
handlers are `async def run(args, ctx) -> int`. Errors raised on purpose (RelayError)
become one line on stderr: exit 2 for usage and config errors, 1 for the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from relay import __version__
from relay.cli import (
    accounts,
    admin,
    bounces,
    certs,
    dkim,
    maintenance,
    migrate,
    prune,
    queue,
    serve,
    status,
    suppressions,
)
from relay.cli._context import Context
from relay.errors import ConfigError, RelayError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

# Order here is the order in `relay --help`.
MODULES = (
    serve,
    migrate,
    admin,
    certs,
    dkim,
    queue,
    status,
    prune,
    bounces,
    suppressions,
    accounts,
    maintenance,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"relay: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="relay",
        description="Self-hosted SMTP relay: accepts your apps' mail, tracks it, signs it with "
        "DKIM and delivers it through a durable queue.",
        epilog="Config: --config PATH or RELAY_CONFIG; any key can be overridden with "
        "RELAY_<SECTION>__<KEY>. Exit codes: 0 ok, 1 failure, 2 usage or config error.",
    )
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    parser.add_argument("-c", "--config", metavar="PATH", help="TOML config file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ctx = Context(config_path=args.config, json=getattr(args, "json", False))
    try:
        factory = getattr(args, "loop_factory", lambda _: None)(args)  # serve: uvloop
        with asyncio.Runner(loop_factory=factory) as runner:
            return int(runner.run(args.handler(args, ctx)) or 0)
    except ConfigError as e:
        print(f"relay: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RelayError as e:
        print(f"relay: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `relay … | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
