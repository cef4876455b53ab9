"""Tenant isolation, endpoint by endpoint: tenant A's data made through the API, then
tenant B's key tries every route of the OpenAPI document and never sees or changes it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest
from starlette.applications import Starlette

from relay.store import tenants
from relay.store.db import Database
from relay.web.api.openapi import document
from tests.web.conftest import Tenant, state


@dataclass
class Seeded:
    a: Tenant
    b: Tenant
    message_id: int
    webhook_id: int


CAMPAIGN = "spring sale/2026"  # a slash: the path segment must be URL-encoded
RCPT = "reader@dest.test"
SUPPRESSED = "gone@dest.test"


@pytest.fixture
async def seeded(
    client: httpx.AsyncClient, app: Starlette, db: Database, tenant_b: Tenant
) -> AsyncIterator[Seeded]:
    tenant = await tenants.add_tenant(db, "owner-a", sender_domains=["a.example"])
    _key, secret = await tenants.create_api_key(db, tenant, "a")
    a = Tenant(tenant.id, secret)
    sent = await client.post(
        "/api/v1/messages",
        json={"from": "news@a.example", "to": RCPT, "text": "hello", "campaign": CAMPAIGN},
        headers=a.auth,
    )
    assert sent.status_code == 202, sent.text
    r = await client.post("/api/v1/suppressions", json={"email": SUPPRESSED}, headers=a.auth)
    assert r.status_code in (200, 201), r.text
    hook = await client.post(
        "/api/v1/webhooks", json={"url": "https://hooks.a.example/in"}, headers=a.auth
    )
    assert hook.status_code == 201, hook.text
    yield Seeded(a, tenant_b, sent.json()["id"], hook.json()["id"])
    await state(app).intake.close()


def _status(r: httpx.Response, *allowed: int) -> None:
    assert r.status_code in allowed, (r.request.method, r.request.url, r.status_code, r.text)


async def test_every_endpoint_is_scoped_to_the_key_tenant(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    a, b = seeded.a, seeded.b
    camp = "/api/v1/campaigns/" + quote(CAMPAIGN, safe="")
    email = quote(RCPT)
    # Reads: B sees nothing of A's, even when naming A's tenant id (only admin keys may).
    checked: set[tuple[str, str]] = set()

    async def call(method: str, route: str, url: str, **kw: object) -> httpx.Response:
        checked.add((method, route))
        r = await client.request(method, url, headers=b.auth, **kw)  # type: ignore[arg-type]
        if r.is_success:
            assert SUPPRESSED not in r.text and "a.example" not in r.text, (url, r.text)
        return r

    for tenant_q in ("", f"?tenant={a.id}"):
        r = await call("get", "/stats/overview", "/api/v1/stats/overview" + tenant_q)
        _status(r, 200)
        assert r.json()["sent"] == 0, r.json()
        r = await call("get", "/campaigns", "/api/v1/campaigns" + tenant_q)
        _status(r, 200)
        assert r.json()["items"] == []
        for route, suffix in (
            ("/campaigns/{campaign}", ""),
            ("/campaigns/{campaign}/timeline", "/timeline"),
            ("/campaigns/{campaign}/links", "/links"),
        ):
            _status(await call("get", route, camp + suffix + tenant_q), 404)
        r = await call("get", "/messages", "/api/v1/messages" + tenant_q)
        _status(r, 200)
        assert r.json()["items"] == []
        sep = "&" if tenant_q else "?"
        for q in (f"campaign={quote(CAMPAIGN)}", f"email={email}"):
            r = await call("get", "/messages", f"/api/v1/messages{tenant_q}{sep}{q}")
            _status(r, 200)
            assert r.json()["items"] == []
        msg = f"/api/v1/messages/{seeded.message_id}{tenant_q}"
        _status(await call("get", "/messages/{id}", msg), 404)
        _status(await call("get", "/recipients/{email}", f"/api/v1/recipients/{email}"), 404)
        r = await call("get", "/recipients/{email}/summary", f"/api/v1/recipients/{email}/summary")
        _status(r, 404)
        r = await call("get", "/suppressions", "/api/v1/suppressions" + tenant_q)
        _status(r, 200)
        assert r.json()["items"] == []
        r = await call("get", "/suppressions/export", "/api/v1/suppressions/export" + tenant_q)
        _status(r, 200)
        r = await call("get", "/webhooks", "/api/v1/webhooks" + tenant_q)
        _status(r, 200)
        assert r.json()["items"] == []
        # Writes on A's things: not found for B, and A's data unchanged (checked below).
        for action in ("pause", "resume", "cancel"):
            route = "/campaigns/{campaign}/" + action
            _status(await call("post", route, f"{camp}/{action}{tenant_q}"), 404)
        release = f"/api/v1/messages/{seeded.message_id}/release{tenant_q}"
        _status(await call("post", "/messages/{id}/release", release), 404)
        r = await call("delete", "/suppressions", f"/api/v1/suppressions?email={SUPPRESSED}")
        _status(r, 404)
        r = await call("delete", "/webhooks", f"/api/v1/webhooks?id={seeded.webhook_id}")
        _status(r, 404)
        # Pool accounts are the operator's: admin keys only.
        _status(await call("get", "/accounts", "/api/v1/accounts"), 403)
        _status(await call("post", "/accounts/{name}/pause", "/api/v1/accounts/x/pause"), 403)
        _status(await call("post", "/accounts/{name}/resume", "/api/v1/accounts/x/resume"), 403)

    # Creations by B land in B's tenant, whatever ?tenant= says.
    r = await call(
        "post",
        "/messages",
        f"/api/v1/messages?tenant={a.id}",
        json={"from": "b@b.example", "to": RCPT, "text": "hi", "campaign": CAMPAIGN},
    )
    _status(r, 202)
    b_message = r.json()["id"]
    _status(await client.get(f"/api/v1/messages/{b_message}", headers=a.auth), 404)
    r = await call(
        "post", "/suppressions", f"/api/v1/suppressions?tenant={a.id}", json={"email": RCPT}
    )
    _status(r, 200, 201)
    r = await call(
        "post", "/webhooks", f"/api/v1/webhooks?tenant={a.id}", json={"url": "https://b.test/h"}
    )
    _status(r, 201)
    assert r.json()["tenant"] == b.id

    # A's data is intact and A does not see B's.
    r = await client.get(camp, headers=a.auth)
    _status(r, 200)
    assert r.json()["state"] == "active"
    assert r.json()["stats"]["sent"] == 1
    r = await client.get("/api/v1/suppressions", headers=a.auth)
    assert [i["email"] for i in r.json()["items"]] == [SUPPRESSED]
    r = await client.get("/api/v1/webhooks", headers=a.auth)
    assert [i["id"] for i in r.json()["items"]] == [seeded.webhook_id]
    r = await client.get("/api/v1/messages", headers=a.auth)
    assert [i["id"] for i in r.json()["items"]] == [seeded.message_id]

    # Every route of the API document was tried with B's key.
    def shape(p: str) -> str:
        return re.sub(r"\{[^}]*\}", "{}", p)

    listed = {
        (m, shape(p.removeprefix("/api/v1")))
        for p, ops in document()["paths"].items()
        for m, op in ops.items()
        if op.get("security") != []  # the tracking endpoints, health, metrics: no key
    }
    assert listed == {(m, shape(p)) for m, p in checked}
