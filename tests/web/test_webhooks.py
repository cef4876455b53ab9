"""Webhooks: API (tenant-scoped), outbox, and the dispatcher POSTing to a real receiver
(a Starlette app under uvicorn on loopback) that verifies the signature."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import pytest
import uvicorn
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay import webhooks as dispatcher
from relay.store import webhooks
from relay.store.db import Database
from relay.store.tables import webhook_deliveries
from tests.web.conftest import NOW, Clock, Tenant


@dataclass
class Receiver:
    url: str
    status: int = 200
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    sock = socket.create_server(("127.0.0.1", 0))
    box = Receiver(f"http://127.0.0.1:{sock.getsockname()[1]}/hook")

    async def hook(request: Request) -> Response:
        box.got.append((dict(request.headers), await request.body()))
        return Response(status_code=box.status)

    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/hook", hook, methods=["POST"])]),
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    server.capture_signals = lambda: __import__("contextlib").nullcontext()  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield box
    finally:
        server.should_exit = True
        await task
        sock.close()


async def test_dispatcher_signs_and_receiver_verifies(
    db: Database, tenant_a: Tenant, receiver: Receiver
) -> None:
    async with db.write() as conn:
        _id, secret = await webhooks.create(conn, tenant_a.id, receiver.url, ["opened"])
        assert await webhooks.enqueue(conn, tenant_a.id, "opened", {"delivery_id": 7}, NOW) == 1
        assert await webhooks.enqueue(conn, tenant_a.id, "bounced", {"delivery_id": 7}, NOW) == 0
    clock = Clock(NOW)
    assert await dispatcher.Dispatcher(db, clock).run_once() == 1
    [(headers, body)] = receiver.got
    assert dispatcher.verify(
        secret, headers["x-relay-timestamp"], body, headers["x-relay-signature"]
    )
    assert not dispatcher.verify(
        "wrong-secret", headers["x-relay-timestamp"], body, headers["x-relay-signature"]
    )
    assert int(headers["x-relay-timestamp"]) == 1795428000  # the injected clock
    event = json.loads(body)
    assert event["type"] == "opened" and event["data"] == {"delivery_id": 7}
    async with db.read() as conn:
        row = (await conn.execute(select(webhook_deliveries))).one()
    assert (row.state, row.attempts) == ("sent", 1)
    assert await dispatcher.Dispatcher(db, clock).run_once() == 0  # nothing left


async def test_dispatcher_retries_with_backoff_then_fails(
    db: Database, tenant_a: Tenant, receiver: Receiver
) -> None:
    receiver.status = 500
    async with db.write() as conn:
        await webhooks.create(conn, tenant_a.id, receiver.url, [])
        await webhooks.enqueue(conn, tenant_a.id, "delivered", {"delivery_id": 1}, NOW)
    clock = Clock(NOW)
    d = dispatcher.Dispatcher(db, clock, max_attempts=2)
    assert await d.run_once() == 1
    async with db.read() as conn:
        row = (await conn.execute(select(webhook_deliveries))).one()
    assert (row.state, row.attempts, row.last_error) == ("pending", 1, "HTTP 500")
    assert row.next_attempt_at == NOW + timedelta(seconds=30)
    assert await d.run_once() == 0  # not due yet
    clock.now = NOW + timedelta(seconds=31)
    assert await d.run_once() == 1
    async with db.read() as conn:
        row = (await conn.execute(select(webhook_deliveries))).one()
    assert (row.state, row.attempts) == ("failed", 2)
    assert len(receiver.got) == 2


async def test_unreachable_endpoint_is_retried(db: Database, tenant_a: Tenant) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    async with db.write() as conn:
        await webhooks.create(conn, tenant_a.id, f"http://127.0.0.1:{port}/", [])
        await webhooks.enqueue(conn, tenant_a.id, "failed", {}, NOW)
    assert await dispatcher.Dispatcher(db, Clock(NOW), timeout_s=2).run_once() == 1
    async with db.read() as conn:
        row = (await conn.execute(select(webhook_deliveries))).one()
    assert row.state == "pending" and "ConnectError" in row.last_error


async def test_webhook_api_tenant_scoped(
    client: httpx.AsyncClient, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    r = await client.post(
        "/api/v1/webhooks",
        json={"url": "https://hooks.example/x", "events": ["clicked"]},
        headers=tenant_a.auth,
    )
    assert r.status_code == 201 and r.json()["secret"].startswith("whsec_")
    hook_id = r.json()["id"]
    mine = (await client.get("/api/v1/webhooks", headers=tenant_a.auth)).json()["items"]
    assert [(h["id"], h["events"]) for h in mine] == [(hook_id, ["clicked"])]
    assert "secret" not in mine[0]
    assert (await client.get("/api/v1/webhooks", headers=tenant_b.auth)).json()["items"] == []
    r = await client.delete(f"/api/v1/webhooks?id={hook_id}", headers=tenant_b.auth)
    assert r.status_code == 404
    for bad in (
        {"url": "ftp://x"},
        {"url": "http://[::1"},
        {"url": "https://x.example", "events": ["sent?"]},
        {},
    ):
        r = await client.post("/api/v1/webhooks", json=bad, headers=tenant_a.auth)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_parameter"
    assert (
        await client.delete(f"/api/v1/webhooks?id={hook_id}", headers=tenant_a.auth)
    ).status_code == 200


_NODE_VERIFIER = """
const crypto = require("crypto");
const [secret, ts, sig, body] = process.argv.slice(1);
const mac = crypto.createHmac("sha256", secret).update(ts + "." + body).digest("hex");
const ok = crypto.timingSafeEqual(Buffer.from("v1=" + mac), Buffer.from(sig));
process.stdout.write(ok ? "valid" : "invalid");
"""


async def test_signature_verifies_as_the_readme_says_in_node(
    db: Database, tenant_a: Tenant, receiver: Receiver
) -> None:
    """A receiver in another language, written from the README alone, accepts the POST."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    async with db.write() as conn:
        _id, secret = await webhooks.create(conn, tenant_a.id, receiver.url, [])
        await webhooks.enqueue(conn, tenant_a.id, "clicked", {"url": "https://x.example/ü"}, NOW)
    assert await dispatcher.Dispatcher(db, Clock(NOW)).run_once() == 1
    [(headers, body)] = receiver.got
    ts, sig = headers["x-relay-timestamp"], headers["x-relay-signature"]
    for key, expected in ((secret, "valid"), (secret + "x", "invalid")):
        proc = await asyncio.create_subprocess_exec(
            node, "-e", _NODE_VERIFIER, key, ts, sig, body.decode(), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        assert out.decode() == expected
