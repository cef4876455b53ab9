"""Web fixtures: a config, keyring and app over the `db` fixture, an httpx client driving
the ASGI app in the test's loop, tenants with API keys, a fixed clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from relay.config import Config
from relay.render.tokens import Keyring
from relay.store import tenants
from relay.store.db import Database
from relay.web.app import create_app
from relay.web.state import WebState

SECRET = "web-tests-tracking-secret-0123456789"
NOW = datetime(2026, 11, 23, 10, 0, 0)


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Tenant:
    id: int
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config.model_validate(
        {
            "data_dir": str(tmp_path),
            "tracking": {"secret": SECRET},
            "http": {"event_flush_interval": 0.05},
        }
    )


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(SECRET.encode())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def app(
    config: Config, db: Database, keyring: Keyring, clock: Clock
) -> AsyncIterator[Starlette]:
    app = create_app(config, db, keyring=keyring, clock=clock)
    yield app
    await state(app).buffer.close()  # stops the writer thread the flushes started


def state(app: Starlette) -> WebState:
    s: WebState = app.state.relay
    return s


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as c:
        yield c


async def make_tenant(db: Database, name: str) -> Tenant:
    tenant = await tenants.add_tenant(db, name)
    _key, secret = await tenants.create_api_key(db, tenant, "test")
    return Tenant(tenant.id, secret)


@pytest.fixture
async def tenant_a(db: Database) -> Tenant:
    return await make_tenant(db, "tenant-a")


@pytest.fixture
async def tenant_b(db: Database) -> Tenant:
    return await make_tenant(db, "tenant-b")


@pytest.fixture
async def admin(db: Database) -> Tenant:
    _key, secret = await tenants.create_api_key(db, None, "admin")
    return Tenant(0, secret)
