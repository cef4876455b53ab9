"""Tenants, their SMTP credentials and their API keys.

Creating a credential or key returns the secret once; only its Argon2 hash is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from relay import passwords
from relay.errors import Conflict, NotFound
from relay.store.db import Database, utcnow
from relay.store.tables import api_keys, smtp_credentials, tenants


@dataclass(frozen=True, slots=True)
class Tenant:
    id: int
    name: str
    sender_domains: tuple[str, ...]
    hold: bool
    settings: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Credential:
    id: int
    tenant_id: int
    username: str
    password_hash: str
    allow_no_suppression: bool
    hold: bool
    disabled: bool


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    tenant_id: int | None  # None: admin key, sees every tenant
    name: str
    prefix: str
    key_hash: str


def _tenant(row: Any) -> Tenant:
    return Tenant(
        row.id, row.name, tuple(row.sender_domains or ()), bool(row.hold), dict(row.settings or {})
    )


async def add_tenant(
    db: Database, name: str, sender_domains: Sequence[str] = (), hold: bool = False
) -> Tenant:
    domains = sorted({d.strip().lower().rstrip(".") for d in sender_domains if d.strip()})
    try:
        async with db.write() as conn:
            result = await conn.execute(
                tenants.insert().values(
                    name=name, sender_domains=domains, settings={}, hold=hold, created_at=utcnow()
                )
            )
            tenant_id = result.inserted_primary_key[0]  # type: ignore[index]
    except IntegrityError:
        raise Conflict(f"a tenant named {name!r} already exists") from None
    return Tenant(int(tenant_id), name, tuple(domains), hold, {})


async def list_tenants(db: Database) -> list[Tenant]:
    async with db.read() as conn:
        rows = await conn.execute(select(tenants).order_by(tenants.c.name))
        return [_tenant(r) for r in rows]


async def get_tenant(db: Database, name: str) -> Tenant:
    async with db.read() as conn:
        row = (await conn.execute(select(tenants).where(tenants.c.name == name))).first()
    if row is None:
        raise NotFound(f"no tenant named {name!r} (see `relay tenants list`)")
    return _tenant(row)


async def get_tenant_by_id(db: Database, tenant_id: int) -> Tenant:
    async with db.read() as conn:
        row = (await conn.execute(select(tenants).where(tenants.c.id == tenant_id))).first()
    if row is None:
        raise NotFound(f"no tenant with id {tenant_id}")
    return _tenant(row)


async def update_tenant(db: Database, name: str, **values: Any) -> Tenant:
    tenant = await get_tenant(db, name)
    if "sender_domains" in values:
        values["sender_domains"] = sorted({d.strip().lower() for d in values["sender_domains"]})
    async with db.write() as conn:
        await conn.execute(update(tenants).where(tenants.c.id == tenant.id).values(**values))
    return await get_tenant(db, name)


async def add_credential(
    db: Database, tenant: Tenant, allow_no_suppression: bool = False, hold: bool = False
) -> tuple[Credential, str]:
    """A new SMTP login for the tenant; returns it and the password (shown once)."""
    username, password = passwords.generate_username(), passwords.generate_password()
    hashed = passwords.hash_secret(password)
    async with db.write() as conn:
        result = await conn.execute(
            smtp_credentials.insert().values(
                tenant_id=tenant.id,
                username=username,
                password_hash=hashed,
                allow_no_suppression=allow_no_suppression,
                hold=hold,
                disabled=False,
                created_at=utcnow(),
            )
        )
        cred_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    return Credential(
        cred_id, tenant.id, username, hashed, allow_no_suppression, hold, False
    ), password


def _credential(row: Any) -> Credential:
    return Credential(
        row.id,
        row.tenant_id,
        row.username,
        row.password_hash,
        bool(row.allow_no_suppression),
        bool(row.hold),
        bool(row.disabled),
    )


async def find_credential(db: Database, username: str) -> Credential | None:
    async with db.read() as conn:
        row = (
            await conn.execute(
                select(smtp_credentials).where(smtp_credentials.c.username == username)
            )
        ).first()
    return _credential(row) if row else None


async def list_credentials(
    db: Database, tenant: Tenant | None = None
) -> list[tuple[Credential, str]]:
    """Credentials with their tenant's name."""
    query = select(smtp_credentials, tenants.c.name.label("tenant_name")).join(tenants)
    if tenant is not None:
        query = query.where(smtp_credentials.c.tenant_id == tenant.id)
    async with db.read() as conn:
        rows = await conn.execute(query.order_by(smtp_credentials.c.id))
        return [(_credential(r), r.tenant_name) for r in rows]


async def set_credential(db: Database, username: str, **values: Any) -> None:
    async with db.write() as conn:
        result = await conn.execute(
            update(smtp_credentials).where(smtp_credentials.c.username == username).values(**values)
        )
    if result.rowcount == 0:
        raise NotFound(f"no SMTP credential with username {username!r}")


async def create_api_key(db: Database, tenant: Tenant | None, name: str = "") -> tuple[ApiKey, str]:
    """A new API key (tenant None = admin); returns it and the key itself (shown once)."""
    key, prefix = passwords.generate_api_key()
    hashed = passwords.hash_secret(key)
    async with db.write() as conn:
        result = await conn.execute(
            api_keys.insert().values(
                tenant_id=tenant.id if tenant else None,
                name=name,
                prefix=prefix,
                key_hash=hashed,
                created_at=utcnow(),
            )
        )
        key_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    return ApiKey(key_id, tenant.id if tenant else None, name, prefix, hashed), key


async def find_api_key(db: Database, prefix: str) -> ApiKey | None:
    async with db.read() as conn:
        row = (
            await conn.execute(
                select(api_keys).where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
            )
        ).first()
    return ApiKey(row.id, row.tenant_id, row.name, row.prefix, row.key_hash) if row else None


async def list_api_keys(db: Database) -> list[tuple[ApiKey, str | None, bool]]:
    """Keys with their tenant's name (None for admin keys) and whether revoked."""
    query = select(api_keys, tenants.c.name.label("tenant_name")).outerjoin(tenants)
    async with db.read() as conn:
        rows = await conn.execute(query.order_by(api_keys.c.id))
        return [
            (
                ApiKey(r.id, r.tenant_id, r.name, r.prefix, r.key_hash),
                r.tenant_name,
                r.revoked_at is not None,
            )
            for r in rows
        ]


async def revoke_api_key(db: Database, prefix: str) -> None:
    async with db.write() as conn:
        result = await conn.execute(
            update(api_keys)
            .where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    if result.rowcount == 0:
        raise NotFound(f"no active API key with prefix {prefix!r}")


async def count_tenants(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(tenants))).scalar_one())
