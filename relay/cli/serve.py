"""`relay serve`: run the roles (smtp, web, delivery) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
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
        help=f"comma-separated roles to run on this machine (default: all of {','.join(ROLES)})",
    )


def parse_roles(value: str) -> tuple[str, ...]:
    roles = tuple(r.strip() for r in value.split(",") if r.strip())
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ConfigError("--role", f"expected some of {', '.join(ROLES)}, got {value!r}")
    return roles


async def run_serve(args: argparse.Namespace, ctx: Context) -> int:
    from relay import service

    roles = parse_roles(args.role)
    return await service.run(ctx.config, roles)
