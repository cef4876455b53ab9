"""Tenants, credentials and API keys on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from relay import passwords
from relay.errors import Conflict, NotFound
from relay.store import tenants as store
from relay.store.db import Database
from relay.store.tables import api_keys, smtp_credentials


async def test_tenant_round_trip(db: Database) -> None:
    made = await store.add_tenant(db, "shop", ["Example.COM.", "example.org"])
    assert made.sender_domains == ("example.com", "example.org")
    assert await store.get_tenant(db, "shop") == made
    assert [t.name for t in await store.list_tenants(db)] == ["shop"]
    with pytest.raises(Conflict, match="already exists"):
        await store.add_tenant(db, "shop")
    with pytest.raises(NotFound, match="no tenant named 'nope'"):
        await store.get_tenant(db, "nope")


async def test_credential_stores_only_a_salted_hash(db: Database) -> None:
    tenant = await store.add_tenant(db, "shop")
    cred, password = await store.add_credential(db, tenant)
    other, other_password = await store.add_credential(db, tenant)
    async with db.read() as conn:
        rows = (await conn.execute(select(smtp_credentials.c.password_hash))).scalars().all()
    assert password not in "".join(rows) and other_password not in "".join(rows)
    assert all(h.startswith("$argon2id$") for h in rows)
    found = await store.find_credential(db, cred.username)
    assert found is not None and found.tenant_id == tenant.id
    assert passwords.verify_secret(found.password_hash, password)
    assert not passwords.verify_secret(found.password_hash, other_password)


async def test_unicode_tenant_names_survive(db: Database) -> None:
    made = await store.add_tenant(db, "bücher-😀")
    assert (await store.get_tenant(db, "bücher-😀")).id == made.id


async def test_api_keys_are_hashed_and_revocable(db: Database) -> None:
    tenant = await store.add_tenant(db, "shop")
    key, secret = await store.create_api_key(db, tenant, "dashboard")
    admin, _ = await store.create_api_key(db, None)
    assert admin.tenant_id is None
    prefix = passwords.api_key_prefix(secret)
    assert prefix == key.prefix
    found = await store.find_api_key(db, prefix)
    assert found is not None and passwords.verify_secret(found.key_hash, secret)
    async with db.read() as conn:
        stored = (await conn.execute(select(api_keys.c.key_hash))).scalars().all()
    assert secret not in "".join(stored)
    await store.revoke_api_key(db, prefix)
    assert await store.find_api_key(db, prefix) is None
    with pytest.raises(NotFound):
        await store.revoke_api_key(db, prefix)
