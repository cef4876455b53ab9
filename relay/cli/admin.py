"""`relay tenants`, `relay credentials`, `relay apikeys`: who may send and who may read."""

from __future__ import annotations

import argparse
from typing import Any

from relay.cli._args import command, group
from relay.cli._context import Context
from relay.cli._output import emit, emit_one
from relay.errors import ConfigError, NotFound
from relay.store import tenants as store


def register(sub: Any) -> None:
    t = group(sub, "tenants", "manage tenants (each app or customer that sends through relay)")
    p = command(t, "add", tenants_add, "add a tenant", json=True)
    p.add_argument("name", help="a short unique name, e.g. 'shop'")
    p.add_argument(
        "--domain",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="a sender domain it may use (repeatable; none given = any domain)",
    )
    p.add_argument("--hold", action="store_true", help="keep all its mail held (staging)")
    command(t, "list", tenants_list, "list tenants", json=True)
    p = command(t, "set", tenants_set, "change a tenant's sender domains or hold", json=True)
    p.add_argument("name")
    p.add_argument(
        "--domain",
        action="append",
        metavar="DOMAIN",
        help="replace its sender domains (repeatable)",
    )
    p.add_argument("--hold", choices=["on", "off"], help="hold all its mail, or stop holding")

    c = group(sub, "credentials", "manage SMTP logins (username/password per app)")
    p = command(
        c, "add", credentials_add, "create an SMTP login; the password is shown once", json=True
    )
    p.add_argument("--tenant", required=True, help="the tenant the login sends as")
    p.add_argument(
        "--allow-no-suppression",
        action="store_true",
        help="let it bypass the suppression list with X-Relay-No-Suppression: 1",
    )
    p.add_argument("--hold", action="store_true", help="keep all mail from this login held")
    p = command(
        c,
        "set",
        credentials_set,
        "hold a login's mail, or change its suppression bypass",
        json=True,
    )
    p.add_argument("username")
    p.add_argument(
        "--hold", choices=["on", "off"], help="hold all mail from this login, or stop holding"
    )
    p.add_argument(
        "--allow-no-suppression",
        choices=["on", "off"],
        help="let it bypass the suppression list with X-Relay-No-Suppression: 1, or not",
    )
    p = command(c, "list", credentials_list, "list SMTP logins (never their passwords)", json=True)
    p.add_argument("--tenant", help="only this tenant's")
    for action, text in (
        ("disable", "refuse this login from now on"),
        ("enable", "accept this login again"),
    ):
        p = command(c, action, credentials_toggle, text, json=True)
        p.add_argument("username")

    k = group(sub, "apikeys", "manage API keys for the REST API")
    p = command(k, "create", apikeys_create, "create an API key; the key is shown once", json=True)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="the tenant whose data the key may read and change")
    who.add_argument("--admin", action="store_true", help="a key that sees every tenant")
    p.add_argument("--name", default="", help="a label for the key")
    command(k, "list", apikeys_list, "list API keys (prefixes only)", json=True)
    p = command(k, "revoke", apikeys_revoke, "revoke an API key", json=True)
    p.add_argument("prefix", help="the key's prefix, as `relay apikeys list` shows it")


def _tenant_record(t: store.Tenant) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "sender_domains": list(t.sender_domains), "hold": t.hold}


async def tenants_add(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database() as db:
        tenant = await store.add_tenant(db, args.name, args.domain, hold=args.hold)
    emit_one(_tenant_record(tenant), args.json, [f"tenant {tenant.name!r} added (id {tenant.id})"])
    return 0


async def tenants_list(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database() as db:
        rows = [_tenant_record(t) for t in await store.list_tenants(db)]
    emit(rows, ["id", "name", "sender_domains", "hold"], args.json)
    return 0


async def tenants_set(args: argparse.Namespace, ctx: Context) -> int:
    values: dict[str, Any] = {}
    if args.domain is not None:
        values["sender_domains"] = args.domain
    if args.hold is not None:
        values["hold"] = args.hold == "on"
    async with ctx.database() as db:
        tenant = (
            await store.update_tenant(db, args.name, **values)
            if values
            else await store.get_tenant(db, args.name)
        )
    emit_one(_tenant_record(tenant), args.json)
    return 0


async def credentials_add(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database() as db:
        tenant = await store.get_tenant(db, args.tenant)
        cred, password = await store.add_credential(
            db, tenant, allow_no_suppression=args.allow_no_suppression, hold=args.hold
        )
    record = {"id": cred.id, "tenant": tenant.name, "username": cred.username, "password": password}
    emit_one(
        record,
        args.json,
        [
            f"SMTP login for tenant {tenant.name!r} (the password is shown only now):",
            f"  username: {cred.username}",
            f"  password: {password}",
        ],
    )
    return 0


def _credential_record(c: store.Credential, tenant: str) -> dict[str, Any]:
    return {
        "id": c.id,
        "tenant": tenant,
        "username": c.username,
        "hold": c.hold,
        "disabled": c.disabled,
        "allow_no_suppression": c.allow_no_suppression,
    }


_CREDENTIAL_COLUMNS = ["id", "tenant", "username", "hold", "disabled", "allow_no_suppression"]


async def credentials_set(args: argparse.Namespace, ctx: Context) -> int:
    values: dict[str, Any] = {}
    if args.hold is not None:
        values["hold"] = args.hold == "on"
    if args.allow_no_suppression is not None:
        values["allow_no_suppression"] = args.allow_no_suppression == "on"
    if not values:
        raise ConfigError(
            "credentials set", "give --hold on|off and/or --allow-no-suppression on|off"
        )
    async with ctx.database() as db:
        await store.set_credential(db, args.username, **values)
        cred = await store.find_credential(db, args.username)
        if cred is None:  # deleted between the two statements
            raise NotFound(f"no SMTP credential with username {args.username!r}")
        tenant = await store.get_tenant_by_id(db, cred.tenant_id)
    emit_one(_credential_record(cred, tenant.name), args.json)
    return 0


async def credentials_list(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database() as db:
        tenant = await store.get_tenant(db, args.tenant) if args.tenant else None
        rows = [_credential_record(c, name) for c, name in await store.list_credentials(db, tenant)]
    emit(rows, _CREDENTIAL_COLUMNS, args.json)
    return 0


async def credentials_toggle(args: argparse.Namespace, ctx: Context) -> int:
    disabled = args.credentials_command == "disable"
    async with ctx.database() as db:
        await store.set_credential(db, args.username, disabled=disabled)
    state = "disabled" if disabled else "enabled"
    emit_one(
        {"username": args.username, "disabled": disabled},
        args.json,
        [f"login {args.username} {state}"],
    )
    return 0


async def apikeys_create(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database() as db:
        tenant = None if args.admin else await store.get_tenant(db, args.tenant)
        key, secret = await store.create_api_key(db, tenant, args.name)
    scope = "every tenant (admin)" if tenant is None else f"tenant {tenant.name!r}"
    record = {
        "id": key.id,
        "prefix": key.prefix,
        "tenant": tenant.name if tenant else None,
        "admin": tenant is None,
        "key": secret,
    }
    emit_one(
        record,
        args.json,
        [
            f"API key for {scope} (shown only now; send it as 'Authorization: Bearer KEY'):",
            f"  {secret}",
        ],
    )
    return 0


async def apikeys_list(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database() as db:
        rows = [
            {
                "id": k.id,
                "prefix": k.prefix,
                "tenant": name or "(admin)",
                "name": k.name,
                "revoked": revoked,
            }
            for k, name, revoked in await store.list_api_keys(db)
        ]
    emit(rows, ["id", "prefix", "tenant", "name", "revoked"], args.json)
    return 0


async def apikeys_revoke(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database() as db:
        await store.revoke_api_key(db, args.prefix)
    emit_one(
        {"prefix": args.prefix, "revoked": True}, args.json, [f"API key {args.prefix} revoked"]
    )
    return 0
