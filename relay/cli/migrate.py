"""`relay migrate` and `relay check-config`."""

from __future__ import annotations

import argparse
from typing import Any

from relay import config as config_module
from relay.cli._args import command
from relay.cli._context import Context
from relay.cli._output import emit_one, print_json
from relay.store.db import upgrade


def register(sub: Any) -> None:
    command(
        sub, "migrate", run_migrate, "create or upgrade the database schema (idempotent)", json=True
    )
    command(
        sub,
        "check-config",
        run_check_config,
        "validate the config and print the effective values, secrets masked",
        json=True,
    )


async def run_migrate(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database(check=False) as db:
        before, after = await upgrade(db.engine)
    url = config_module.masked(ctx.config)["database"]["url"]
    record = {"database": url, "from": before, "to": after, "changed": before != after}
    message = (
        f"database {url}: already at revision {after}"
        if before == after
        else f"database {url}: migrated from {before or 'empty'} to {after}"
    )
    emit_one(record, args.json, [message])
    return 0


async def run_check_config(args: argparse.Namespace, ctx: Context) -> int:
    effective = config_module.masked(ctx.config)
    if args.json:
        print_json(effective)
    else:
        source = ctx.config_path or "(no file: built-in defaults)"
        print(f"# config OK: {source}")
        print(_to_toml(effective))
    return 0


def _to_toml(data: dict[str, Any]) -> str:
    """The effective config as TOML a user could paste back into a file."""
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for key, value in scalars.items():
        lines.append(f"{key} = {_value(value)}")
    for section, values in data.items():
        if not isinstance(values, dict):
            continue
        tables = {
            k: v
            for k, v in values.items()
            if isinstance(v, list) and v and all(isinstance(i, dict) for i in v)
        }
        lines.append(f"\n[{section}]")
        for key, value in values.items():
            if key not in tables:
                lines.append(f"{key} = {_value(value)}")
        for key, items in tables.items():
            for item in items:
                lines.append(f"\n[[{section}.{key}]]")
                lines.extend(f"{k} = {_value(v)}" for k, v in item.items())
    return "\n".join(lines).lstrip("\n")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + "}"
    return str(value)
