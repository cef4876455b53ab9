"""Argument helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from relay.cli._context import Context

Handler = Callable[[argparse.Namespace, Context], Awaitable[int]]
Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


def command(
    sub: Any, name: str, handler: Handler, help: str, json: bool = False, **kwargs: Any
) -> argparse.ArgumentParser:
    """Add a subcommand whose description is its help; `json` adds --json."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help, **kwargs)
    parser.set_defaults(handler=handler)
    if json:
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    return parser


def group(sub: Any, name: str, help: str) -> Any:
    """A subcommand that has subcommands of its own (`relay tenants add`)."""
    parser = sub.add_parser(name, help=help, description=help)
    inner = parser.add_subparsers(dest=f"{name}_command", metavar="ACTION")
    inner.required = True
    return inner


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (argparse names the option, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
