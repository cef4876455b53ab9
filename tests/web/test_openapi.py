"""The OpenAPI document: it lists exactly the API routes the app serves, and schemathesis,
generating requests from it against a real uvicorn server, finds no server error."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from starlette.routing import Mount, Route

from relay.config import Config, DatabaseConfig
from relay.store import tenants
from relay.store.db import Database
from relay.web.api.openapi import document
from relay.web.app import create_app
from tests.web.conftest import SECRET


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_document_lists_every_route(tmp_path: Path) -> None:
    """The API routes, the tracking endpoints, health and metrics: all of them, no more."""
    config = Config.model_validate({"data_dir": str(tmp_path), "tracking": {"secret": SECRET}})
    app = create_app(config, Database.from_config(DatabaseConfig(url="sqlite+aiosqlite://")))
    served = {("get", "/track/open/{}")}  # answered by the pixel fast path, not a route
    for route in app.routes:
        inner = route.routes if isinstance(route, Mount) else [route]
        prefix = route.path if isinstance(route, Mount) else ""
        for r in inner:
            if isinstance(r, Route) and r.path != "/{rest:path}":
                served |= {
                    (m.lower(), _shape(prefix + r.path)) for m in r.methods or () if m != "HEAD"
                }
    doc = document()
    listed = {(m, _shape(p)) for p, ops in doc["paths"].items() for m in ops}
    assert served == listed
    assert len(served) > 30
    public = {
        p for p, ops in doc["paths"].items() for op in ops.values() if op.get("security") == []
    }
    assert public == {
        "/track/open/{token}",
        "/track/click/{token}",
        "/unsubscribe/{token}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
    }


async def _setup(url: str) -> tuple[str, str]:
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        tenant = await tenants.add_tenant(db, "schema-tenant")
        _key, secret = await tenants.create_api_key(db, tenant)
        _akey, admin = await tenants.create_api_key(db, None)
        return secret, admin
    finally:
        await db.dispose()


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """A uvicorn server in a thread over a SQLite copy: (base URL, {"tenant", "admin"} keys)."""
    tmp = tmp_path_factory.mktemp("openapi")
    target = tmp / "relay.db"
    target.write_bytes(sqlite_template.read_bytes())
    url = f"sqlite+aiosqlite:///{target}"
    key, admin = asyncio.run(_setup(url))
    config = Config.model_validate(
        {"data_dir": str(tmp), "tracking": {"secret": SECRET}, "database": {"url": url}}
    )
    sock = socket.create_server(("127.0.0.1", 0))
    holder: dict[str, object] = {}

    def serve() -> None:
        async def main() -> None:
            db = Database.from_config(config.database)
            server = uvicorn.Server(
                uvicorn.Config(
                    create_app(config, db), log_config=None, access_log=False, lifespan="on"
                )
            )
            holder["server"] = server
            try:
                await server.serve(sockets=[sock])
            finally:
                await db.dispose()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield base, {"tenant": key, "admin": admin}
    finally:
        server = holder.get("server")
        if server is not None:
            server.should_exit = True  # type: ignore[attr-defined]
        thread.join(20)
        sock.close()


schema = schemathesis.openapi.from_dict(document())


# Every operation with a tenant key. The tracking endpoints answer generated garbage tokens
# with 404 pages: correct, and not a server error.
@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, live: tuple[str, dict[str, str]]) -> None:
    base, keys = live
    case.call_and_validate(
        base_url=base,
        headers={"Authorization": f"Bearer {keys['tenant']}"},
        checks=[not_a_server_error],
    )


# The API again with an admin key, which takes other paths: it may name any tenant
# (?tenant=), sees the global suppression list and the pool accounts.
@schema.include(path_regex="^/api/v1/").parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_admin(case: schemathesis.Case, live: tuple[str, dict[str, str]]) -> None:
    base, keys = live
    case.call_and_validate(
        base_url=base,
        headers={"Authorization": f"Bearer {keys['admin']}"},
        checks=[not_a_server_error],
    )


def test_openapi_served(live: tuple[str, dict[str, str]]) -> None:
    base, _keys = live
    r = httpx.get(base + "/api/v1/openapi.json", timeout=10)
    assert r.status_code == 200 and r.json()["openapi"] == "3.1.0"
