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


def test_document_lists_every_api_route(tmp_path: Path) -> None:
    config = Config.model_validate({"data_dir": str(tmp_path), "tracking": {"secret": SECRET}})
    app = create_app(config, Database.from_config(DatabaseConfig(url="sqlite+aiosqlite://")))
    [mount] = [r for r in app.routes if isinstance(r, Mount)]
    served = {
        (m.lower(), _shape(r.path))
        for r in mount.routes
        if isinstance(r, Route) and r.path not in ("/openapi.json", "/{rest:path}")
        for m in (r.methods or ())
        if m != "HEAD"
    }
    doc = document()
    listed = {(m, _shape(p)) for p, ops in doc["paths"].items() for m in ops}
    assert served == listed


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
) -> Iterator[tuple[str, str]]:
    """A uvicorn server in a thread over a SQLite copy: (base URL, tenant key)."""
    tmp = tmp_path_factory.mktemp("openapi")
    target = tmp / "relay.db"
    target.write_bytes(sqlite_template.read_bytes())
    url = f"sqlite+aiosqlite:///{target}"
    key, _admin = asyncio.run(_setup(url))
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
        yield base, key
    finally:
        server = holder.get("server")
        if server is not None:
            server.should_exit = True  # type: ignore[attr-defined]
        thread.join(20)
        sock.close()


schema = schemathesis.openapi.from_dict(document())


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, live: tuple[str, str]) -> None:
    base, key = live
    case.call_and_validate(
        base_url=base + "/api/v1",
        headers={"Authorization": f"Bearer {key}"},
        checks=[not_a_server_error],
    )


def test_openapi_served(live: tuple[str, str]) -> None:
    base, _key = live
    r = httpx.get(base + "/api/v1/openapi.json", timeout=10)
    assert r.status_code == 200 and r.json()["openapi"] == "3.1.0"
