"""A running ingress on a free loopback port, over the `db` fixture, with one credential."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay.config import Config
from relay.ingress import server
from relay.ingress.handler import Shared
from relay.store.db import Database
from relay.store.tenants import Credential, Tenant, add_credential, add_tenant
from tests.peers import free_port


@dataclass
class Running:
    port: int
    shared: Shared
    tenant: Tenant
    credential: Credential
    password: str
    db: Database


def make_config(port: int, **smtp: Any) -> Config:
    values: dict[str, Any] = {"listen": [f"127.0.0.1:{port}"], "hostname": "relay.test"}
    values.update(smtp)
    return Config.model_validate({"smtp": values, "bounce": {"domain": "bounces.relay.test"}})


async def start_ingress(db: Database, **smtp: Any) -> tuple[Running, list[Any]]:
    tenant = await add_tenant(db, "shop", sender_domains=["shop.example"])
    credential, password = await add_credential(db, tenant)
    port = free_port()
    shared, servers = await server.start(make_config(port, **smtp), db)
    return Running(port, shared, tenant, credential, password, db), servers

