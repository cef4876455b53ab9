"""REST API over stored records: suppressions (incl. CSV), messages, recipients; each one
checked against another tenant's key."""

from __future__ import annotations

import csv
import io

import httpx
from sqlalchemy import select

from relay.store import suppressions
from relay.store.db import Database
from relay.store.tables import recipient_events
from tests import rows
from tests.web.conftest import NOW, Tenant


def _error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


async def test_suppressions_add_list_remove_isolated(
    client: httpx.AsyncClient, db: Database, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    r = await client.post(
        "/api/v1/suppressions", json={"email": "Bob@Example.COM"}, headers=tenant_a.auth
    )
    assert r.status_code == 201 and r.json()["email"] == "bob@example.com"
    assert r.json()["reason"] == "manual" and r.json()["scope"] == "tenant"
    again = await client.post(
        "/api/v1/suppressions", json={"email": "bob@example.com"}, headers=tenant_a.auth
    )
    assert again.status_code == 200
    mine = (await client.get("/api/v1/suppressions", headers=tenant_a.auth)).json()
    assert [s["email"] for s in mine["items"]] == ["bob@example.com"]
    theirs = (await client.get("/api/v1/suppressions", headers=tenant_b.auth)).json()
    assert theirs["items"] == []
    _error(
        await client.delete("/api/v1/suppressions?email=bob@example.com", headers=tenant_b.auth),
        404,
        "not_found",
    )
    assert (
        await client.delete("/api/v1/suppressions?email=bob@example.com", headers=tenant_a.auth)
    ).status_code == 200
    assert (await client.get("/api/v1/suppressions", headers=tenant_a.auth)).json()["items"] == []


async def test_suppression_validation(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    post = "/api/v1/suppressions"
    _error(await client.post(post, content=b"{nope", headers=tenant_a.auth), 400, "invalid_json")
    _error(await client.post(post, json=["x"], headers=tenant_a.auth), 400, "invalid_json")
    _error(
        await client.post(post, json={"email": "not-an-address"}, headers=tenant_a.auth),
        400,
        "invalid_parameter",
    )
    _error(
        await client.post(
            post, json={"email": "a@b.example", "reason": "because"}, headers=tenant_a.auth
        ),
        400,
        "invalid_parameter",
    )
    _error(
        await client.post(
            post, json={"email": "a@b.example", "expires_at": "soon"}, headers=tenant_a.auth
        ),
        400,
        "invalid_parameter",
    )
    _error(await client.delete(post, headers=tenant_a.auth), 400, "invalid_parameter")
    _error(
        await client.get("/api/v1/suppressions/export?format=xml", headers=tenant_a.auth),
        400,
        "invalid_parameter",
    )


async def test_suppression_pagination_and_csv_export(
    client: httpx.AsyncClient, db: Database, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    async with db.write() as conn:
        for i in range(5):
            await suppressions.add(conn, tenant_a.id, f"u{i}@example.com", "unsubscribe")
        await suppressions.add(conn, tenant_b.id, "secret@example.com", "manual")
    emails, cursor = [], None
    while True:
        url = "/api/v1/suppressions?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = (await client.get(url, headers=tenant_a.auth)).json()
        emails += [s["email"] for s in body["items"]]
        if not (cursor := body["next_cursor"]):
            break
    assert emails == [f"u{i}@example.com" for i in range(5)]
    r = await client.get("/api/v1/suppressions/export?format=csv", headers=tenant_a.auth)
    assert r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["email"] for row in table] == emails
    assert {row["reason"] for row in table} == {"unsubscribe"}
    r = await client.get("/api/v1/suppressions/export?format=json", headers=tenant_a.auth)
    assert r.headers["content-type"].startswith("application/json")
    assert [item["email"] for item in r.json()] == emails  # the tenant's own list only
    assert {item["scope"] for item in r.json()} == {"tenant"}


async def test_suppression_lifetime_defaults_per_reason(
    client: httpx.AsyncClient, tenant_a: Tenant
) -> None:
    post = "/api/v1/suppressions"
    hard = await client.post(
        post, json={"email": "gone@example.com", "reason": "hard_bounce"}, headers=tenant_a.auth
    )
    assert hard.status_code == 201 and hard.json()["expires_at"]  # bounce.hard_bounce_ttl
    manual = await client.post(post, json={"email": "m@example.com"}, headers=tenant_a.auth)
    assert manual.json()["expires_at"] is None  # manual: forever by default
    forever = await client.post(
        post,
        json={"email": "gone@example.com", "reason": "hard_bounce", "expires_at": None},
        headers=tenant_a.auth,
    )
    assert forever.status_code == 200 and forever.json()["expires_at"] is None


async def test_messages_and_recipients_isolated(
    client: httpx.AsyncClient, db: Database, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    msg_a = await rows.message(db, tenant_a.id, subject="For A")
    await rows.delivery(
        db, msg_a, "Ann@Example.com", state="delivered", attempts=1, last_reply="250 2.0.0 ok"
    )
    msg_b = await rows.message(db, tenant_b.id, subject="For B")
    await rows.delivery(db, msg_b, "ann@example.com", state="queued")
    async with db.write() as conn:
        await conn.execute(
            recipient_events.insert().values(
                tenant_id=tenant_a.id,
                message_id=msg_a,
                recipient="ann@example.com",
                type="opened",
                occurred_at=NOW,
            )
        )

    listed = (await client.get("/api/v1/messages", headers=tenant_a.auth)).json()
    assert [m["subject"] for m in listed["items"]] == ["For A"]
    by_email = (
        await client.get(
            "/api/v1/messages?email=ANN@example.com&status=delivered", headers=tenant_a.auth
        )
    ).json()
    assert [m["id"] for m in by_email["items"]] == [msg_a]
    none = (await client.get("/api/v1/messages?status=bounced", headers=tenant_a.auth)).json()
    assert none["items"] == []
    _error(
        await client.get("/api/v1/messages?status=lost", headers=tenant_a.auth),
        400,
        "invalid_parameter",
    )

    detail = (await client.get(f"/api/v1/messages/{msg_a}", headers=tenant_a.auth)).json()
    assert detail["deliveries"][0]["state"] == "delivered"
    assert detail["deliveries"][0]["last_reply"] == "250 2.0.0 ok"
    assert [e["type"] for e in detail["events"]] == ["opened"]
    _error(await client.get(f"/api/v1/messages/{msg_b}", headers=tenant_a.auth), 404, "not_found")
    _error(
        await client.get("/api/v1/messages/abc", headers=tenant_a.auth), 400, "invalid_parameter"
    )

    rec = (await client.get("/api/v1/recipients/ann@example.com", headers=tenant_a.auth)).json()
    assert [d["message_id"] for d in rec["deliveries"]] == [msg_a]
    summary = (
        await client.get("/api/v1/recipients/ann@example.com/summary", headers=tenant_b.auth)
    ).json()
    assert summary["deliveries_by_state"] == {"queued": 1}
    _error(
        await client.get("/api/v1/recipients/nobody@example.com", headers=tenant_a.auth),
        404,
        "not_found",
    )


async def test_messages_pagination_newest_first(
    client: httpx.AsyncClient, db: Database, tenant_a: Tenant
) -> None:
    ids = [await rows.message(db, tenant_a.id) for _ in range(5)]
    seen, cursor = [], None
    while True:
        url = "/api/v1/messages?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = (await client.get(url, headers=tenant_a.auth)).json()
        seen += [m["id"] for m in body["items"]]
        if not (cursor := body["next_cursor"]):
            break
    assert seen == sorted(ids, reverse=True)


async def test_admin_sees_all_messages(
    client: httpx.AsyncClient, db: Database, tenant_a: Tenant, tenant_b: Tenant, admin: Tenant
) -> None:
    await rows.message(db, tenant_a.id)
    await rows.message(db, tenant_b.id)
    assert len((await client.get("/api/v1/messages", headers=admin.auth)).json()["items"]) == 2
    _error(
        await client.get("/api/v1/recipients/a@example.com", headers=admin.auth),
        400,
        "invalid_parameter",
    )
    async with db.read() as conn:
        assert list(await conn.execute(select(recipient_events))) == []


async def test_out_of_range_ids_are_400_not_500(
    client: httpx.AsyncClient, tenant_a: Tenant
) -> None:
    for path in (
        "/api/v1/messages/99999999999999999999999",
        "/api/v1/messages/²",
        "/api/v1/messages?cursor=aWQ6OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5",
        "/api/v1/webhooks?id=2041033878458675757056",
    ):
        method = "DELETE" if "webhooks" in path else "GET"
        r = await client.request(method, path, headers=tenant_a.auth)
        _error(r, 400, "invalid_parameter")
