"""`relay serve`: run the roles (smtp, web, delivery) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Callable
from typing import Any

from relay.cli._args import command
from relay.cli._context import Context
from relay.errors import ConfigError

ROLES = ("smtp", "web", "delivery")


def register(sub: Any) -> None:
    p = command(sub, "serve", run_serve, "run relay: SMTP ingress, web app and delivery workers")
    p.add_argument(
        "--role",
        default=",".join(ROLES),
        help="roles to run on this machine, separated by commas or dashes "
        f"(default: all of {','.join(ROLES)})",
    )
    p.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop: uvloop when installed (auto, the default), or asyncio's own",
    )
    p.set_defaults(loop_factory=loop_factory)


def parse_roles(value: str) -> tuple[str, ...]:
    # Commas on the command line; dashes too, since systemd instance names cannot hold commas.
    roles = tuple(r.strip() for r in re.split(r"[,-]", value) if r.strip())
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ConfigError("--role", f"expected some of {', '.join(ROLES)}, got {value!r}")
    return roles


async def run_serve(args: argparse.Namespace, ctx: Context) -> int:
    from relay import config as config_module
    from relay import service

    roles = parse_roles(args.role)
    return await service.run(ctx.config, roles, lambda: config_module.load(ctx.config_path))


def loop_factory(args: argparse.Namespace) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (one loop for every role), else asyncio's own."""
    if args.loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if args.loop == "uvloop":
            raise ConfigError("--loop", "uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop
