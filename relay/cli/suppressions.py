"""`relay suppressions list|add|remove|export|import|prune`: the addresses relay will not mail.

Reads and changes the `suppressions` table (every change bumps the change counter, so
running processes refresh their caches). `export` writes CSV or JSON to stdout; `import`
(suppressions_import.py) reads them back.
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Any

from relay.addresses import InvalidAddress, normalize
from relay.cli import suppressions_import
from relay.cli._args import command, group
from relay.cli._context import Context
from relay.cli._output import emit, emit_one, print_json, warn
from relay.cli._progress import progress
from relay.config import parse_duration
from relay.model import SuppressionReason
from relay.store import suppressions as store
from relay.store.db import Database
from relay.store.tenants import get_tenant, list_tenants

COLUMNS = ["id", "scope", "email", "reason", "source", "created_at", "expires_at"]
REASONS = [r.value for r in SuppressionReason]
EXIT_USAGE = 2
PAGE = 1000


def register(sub: Any) -> None:
    s = group(sub, "suppressions", "the suppression list: addresses relay will not mail")
    p = command(s, "list", suppressions_list, "list suppressed addresses", json=True)
    _scope_args(p)
    p.add_argument("--reason", choices=REASONS, help="only this reason")
    p.add_argument("--email", metavar="TEXT", help="only addresses containing TEXT")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.add_argument("--after", type=int, default=0, metavar="ID", help="continue after this id")
    p.add_argument("--include-expired", action="store_true", help="show expired rows too")

    p = command(s, "add", suppressions_add, "suppress addresses", json=True)
    p.add_argument("email", nargs="+", help="the address(es) to suppress")
    _scope_args(p)
    p.add_argument("--reason", choices=REASONS, default="manual", help="default: manual")
    p.add_argument("--source", default="cli", help="a note on where this came from")
    p.add_argument(
        "--ttl",
        metavar="DURATION",
        help="lifetime like 30d or 12h; 0 = forever (default: [bounce] <reason>_ttl)",
    )

    p = command(s, "remove", suppressions_remove, "stop suppressing addresses", json=True)
    p.add_argument("email", nargs="+")
    _scope_args(p)

    p = command(s, "export", suppressions_export, "write the whole list as CSV or JSON")
    _scope_args(p)
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.add_argument("--include-expired", action="store_true")

    suppressions_import.register(s)

    command(s, "prune", suppressions_prune, "delete expired suppressions", json=True)


def _scope_args(p: argparse.ArgumentParser) -> None:
    who = p.add_mutually_exclusive_group()
    who.add_argument("--tenant", metavar="NAME", help="this tenant's list")
    who.add_argument(
        "--global",
        dest="global_",
        action="store_true",
        help="the installation-wide list (the default for add/remove)",
    )


async def _scope(db: Database, args: argparse.Namespace) -> int | None:
    """None = all scopes (list/export without a filter), 0 = global, else the tenant id."""
    if args.tenant:
        return (await get_tenant(db, args.tenant)).id
    return store.GLOBAL if args.global_ else None


def _keys(args: argparse.Namespace) -> list[str] | None:
    keys = []
    for raw in args.email:
        try:
            keys.append(normalize(raw).key)
        except InvalidAddress as e:
            warn(f"relay suppressions {args.suppressions_command}: email {raw!r}: {e}")
            return None
    return keys


async def _names(db: Database) -> dict[int, str]:
    return {t.id: t.name for t in await list_tenants(db)}


def _record(s: store.Suppression, names: dict[int, str]) -> dict[str, Any]:
    scope = "global" if s.tenant_id is None else names.get(s.tenant_id, str(s.tenant_id))
    return {
        "id": s.id,
        "scope": scope,
        "email": s.email,
        "reason": s.reason,
        "source": s.source,
        "created_at": s.created_at,
        "expires_at": s.expires_at,
    }


async def suppressions_list(args: argparse.Namespace, ctx: Context) -> int:
    if args.limit < 1:
        warn("relay suppressions list: --limit must be at least 1")
        return EXIT_USAGE
    async with ctx.database() as db:
        scope = await _scope(db, args)
        async with db.read() as conn:
            page = await store.list_page(
                conn,
                scope=scope,
                reason=args.reason,
                email_contains=args.email,
                after_id=args.after,
                limit=args.limit,
                include_expired=args.include_expired,
            )
        names = await _names(db)
    emit([_record(s, names) for s in page], COLUMNS, args.json)
    if len(page) == args.limit and not args.json:
        warn(f"(more: --after {page[-1].id})")
    return 0


async def suppressions_add(args: argparse.Namespace, ctx: Context) -> int:
    keys = _keys(args)
    if keys is None:
        return EXIT_USAGE
    try:
        ttl_s = (
            ctx.config.bounce.ttl_s(args.reason) if args.ttl is None else parse_duration(args.ttl)
        )
    except ValueError as e:
        warn(f"relay suppressions add: --ttl {args.ttl!r}: {e}")
        return EXIT_USAGE
    async with ctx.database() as db:
        tenant_id = await _scope(db, args) or None
        created = []
        async with db.write() as conn:
            expires_at = store.expiry(ttl_s)
            for key in keys:
                if await store.add(
                    conn, tenant_id, key, args.reason, args.source, expires_at, replace=True
                ):
                    created.append(key)
    emit_one(
        {
            "added": created,
            "updated": [k for k in keys if k not in created],
            "expires_at": expires_at,
        },
        args.json,
        [f"suppressed {k} ({args.reason}, until {expires_at or 'forever'})" for k in keys],
    )
    return 0


async def suppressions_remove(args: argparse.Namespace, ctx: Context) -> int:
    keys = _keys(args)
    if keys is None:
        return EXIT_USAGE
    async with ctx.database() as db:
        tenant_id = await _scope(db, args) or None
        async with db.write() as conn:
            removed = [k for k in keys if await store.remove(conn, tenant_id, k)]
    missing = [k for k in keys if k not in removed]
    emit_one(
        {"removed": removed, "not_found": missing},
        args.json,
        [f"removed {k}" for k in removed] + [f"not suppressed: {k}" for k in missing],
    )
    return 0 if not missing else 1


async def suppressions_export(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database() as db:
        scope = await _scope(db, args)
        names = await _names(db)
        records: list[dict[str, Any]] = []
        after = 0
        with progress(lambda: f"read {len(records)} suppressions") as refresh:
            async with db.read() as conn:
                while True:
                    page = await store.list_page(
                        conn,
                        scope=scope,
                        after_id=after,
                        limit=PAGE,
                        include_expired=args.include_expired,
                    )
                    records.extend(_record(s, names) for s in page)
                    refresh()
                    if len(page) < PAGE:
                        break
                    after = page[-1].id
    if args.format == "json":
        print_json(records)
        return 0
    writer = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow(
            {
                k: "" if v is None else v.isoformat() if hasattr(v, "isoformat") else v
                for k, v in r.items()
            }
        )
    return 0


async def suppressions_prune(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database() as db:
        async with db.write() as conn:
            count = await store.prune(conn)
    emit_one({"pruned": count}, args.json, [f"pruned {count} expired suppression(s)"])
    return 0
