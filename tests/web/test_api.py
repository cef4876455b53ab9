"""REST API: auth, tenant isolation on every endpoint, stats from counters, campaigns,
pagination and JSON errors."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from relay.store import stats, tenants
from relay.store.db import Database, utcnow
from relay.store.tables import campaigns, deliveries, recipient_events
from tests import rows
from tests.web.conftest import NOW, Tenant


async def _campaign(db: Database, tenant_id: int, name: str) -> int:
    async with db.write() as conn:
        result = await conn.execute(
            campaigns.insert().values(
                tenant_id=tenant_id, name=name, state="active", settings={}, created_at=utcnow()
            )
        )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


async def _counts(db: Database, tenant_id: int, campaign_id: int | None, **metrics: int) -> None:
    async with db.write() as conn:
        await stats.bump_many(
            conn, {(tenant_id, campaign_id, NOW, m): n for m, n in metrics.items()}
        )


def _error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code and body["error"]["message"]


async def test_auth_required_and_checked(
    client: httpx.AsyncClient, db: Database, tenant_a: Tenant
) -> None:
    _error(await client.get("/api/v1/stats/overview"), 401, "unauthorized")
    bad = {"Authorization": "Bearer rk_000000000000_nope"}
    _error(await client.get("/api/v1/stats/overview", headers=bad), 401, "unauthorized")
    wrong_secret = {"Authorization": f"Bearer {tenant_a.key[:-3]}xyz"}
    _error(await client.get("/api/v1/stats/overview", headers=wrong_secret), 401, "unauthorized")
    assert (await client.get("/api/v1/stats/overview", headers=tenant_a.auth)).status_code == 200
    await tenants.revoke_api_key(db, tenant_a.key.split("_")[1])
    _error(await client.get("/api/v1/stats/overview", headers=tenant_a.auth), 401, "unauthorized")


async def test_overview_from_counters_scoped_to_tenant(
    client: httpx.AsyncClient, db: Database, tenant_a: Tenant, tenant_b: Tenant, admin: Tenant
) -> None:
    await _counts(
        db,
        tenant_a.id,
        None,
        sent=10,
        delivered=8,
        bounced_hard=1,
        bounced_soft=1,
        opened=6,
        opened_unique=4,
        opened_human=5,
        opened_unique_human=3,
        clicked=2,
        clicked_unique=2,
        clicked_human=1,
        clicked_unique_human=1,
    )
    await _counts(db, tenant_b.id, None, sent=1000, delivered=999)
    a = (await client.get("/api/v1/stats/overview", headers=tenant_a.auth)).json()
    assert a["sent"] == 10 and a["delivered"] == 8
    assert a["bounced"] == {"hard": 1, "soft": 1, "total": 2}
    assert a["opens"] == {"unique": 4, "total": 6, "human": 5, "unique_human": 3, "machine": 1}
    assert a["clicks"]["machine"] == 1
    assert a["rates"]["delivery"] == 0.8 and a["rates"]["open"] == 0.5
    # Key A asking for tenant B gets A's numbers: the key decides, not the parameter.
    a2 = (
        await client.get(f"/api/v1/stats/overview?tenant={tenant_b.id}", headers=tenant_a.auth)
    ).json()
    assert a2["sent"] == 10
    everything = (await client.get("/api/v1/stats/overview", headers=admin.auth)).json()
    assert everything["sent"] == 1010
    only_b = (
        await client.get(f"/api/v1/stats/overview?tenant={tenant_b.id}", headers=admin.auth)
    ).json()
    assert only_b["sent"] == 1000


async def test_overview_time_range_and_bad_params(
    client: httpx.AsyncClient, db: Database, tenant_a: Tenant
) -> None:
    async with db.write() as conn:
        await stats.bump(conn, tenant_a.id, None, "sent", NOW - timedelta(days=2), 5)
        await stats.bump(conn, tenant_a.id, None, "sent", NOW, 7)
    url = "/api/v1/stats/overview?from=2026-11-23T00:00:00Z&to=2026-11-24T00:00:00%2B00:00"
    r = (await client.get(url, headers=tenant_a.auth)).json()
    assert r["sent"] == 7 and r["from"] == "2026-11-23T00:00:00Z"
    _error(
        await client.get("/api/v1/stats/overview?from=yesterday", headers=tenant_a.auth),
        400,
        "invalid_parameter",
    )
    _error(
        await client.get(
            "/api/v1/stats/overview?from=2026-11-24&to=2026-11-23", headers=tenant_a.auth
        ),
        400,
        "invalid_parameter",
    )
    _error(await client.get("/api/v1/no/such/thing", headers=tenant_a.auth), 404, "not_found")


async def test_campaign_list_pagination_and_isolation(
    client: httpx.AsyncClient, db: Database, tenant_a: Tenant, tenant_b: Tenant, admin: Tenant
) -> None:
    ids = [await _campaign(db, tenant_a.id, f"spring-{i}") for i in range(5)]
    await _campaign(db, tenant_b.id, "b-secret")
    await _counts(db, tenant_a.id, ids[0], sent=3, delivered=2)
    seen, cursor = [], None
    while True:
        url = "/api/v1/campaigns?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = (await client.get(url, headers=tenant_a.auth)).json()
        seen += [c["id"] for c in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"spring-{i}" for i in range(5)]
    first = (await client.get("/api/v1/campaigns?limit=1", headers=tenant_a.auth)).json()
    assert first["items"][0]["stats"]["sent"] == 3
    b = (await client.get("/api/v1/campaigns", headers=tenant_b.auth)).json()
    assert [c["id"] for c in b["items"]] == ["b-secret"]
    everything = (await client.get("/api/v1/campaigns", headers=admin.auth)).json()
    assert len(everything["items"]) == 6
    _error(
        await client.get("/api/v1/campaigns?limit=0", headers=tenant_a.auth),
        400,
        "invalid_parameter",
    )
    _error(
        await client.get("/api/v1/campaigns?cursor=%%%", headers=tenant_a.auth),
        400,
        "invalid_parameter",
    )


@pytest.mark.parametrize("suffix", ["", "/timeline", "/links"])
async def test_campaign_reads_are_tenant_scoped(
    client: httpx.AsyncClient, db: Database, tenant_a: Tenant, tenant_b: Tenant, suffix: str
) -> None:
    await _campaign(db, tenant_b.id, "b/only news")
    url = f"/api/v1/campaigns/b%2Fonly%20news{suffix}"
    _error(await client.get(url, headers=tenant_a.auth), 404, "not_found")
    assert (await client.get(url, headers=tenant_b.auth)).status_code == 200


@pytest.mark.parametrize("action", ["pause", "resume", "cancel"])
async def test_campaign_actions_are_tenant_scoped(
    client: httpx.AsyncClient, db: Database, tenant_a: Tenant, tenant_b: Tenant, action: str
) -> None:
    campaign_id = await _campaign(db, tenant_b.id, "b-news")
    message_id = await rows.message(db, tenant_b.id, campaign_id=campaign_id)
    delivery_id = await rows.delivery(db, message_id)
    _error(
        await client.post(f"/api/v1/campaigns/b-news/{action}", headers=tenant_a.auth),
        404,
        "not_found",
    )
    async with db.read() as conn:
        state = (
            await conn.execute(select(deliveries.c.state).where(deliveries.c.id == delivery_id))
        ).scalar()
    assert state == "queued"


async def test_campaign_stats_timeline_links(
    client: httpx.AsyncClient, db: Database, tenant_a: Tenant
) -> None:
    campaign_id = await _campaign(db, tenant_a.id, "autumn")
    async with db.write() as conn:
        await stats.bump(conn, tenant_a.id, campaign_id, "sent", NOW, 4)
        await stats.bump(conn, tenant_a.id, campaign_id, "sent", NOW + timedelta(hours=1), 6)
        await stats.bump(conn, tenant_a.id, campaign_id, "delivered", NOW, 3)
        for url, machine in (
            ("https://a.example/", False),
            ("https://a.example/", True),
            ("https://b.example/", False),
        ):
            await conn.execute(
                recipient_events.insert().values(
                    tenant_id=tenant_a.id,
                    campaign_id=campaign_id,
                    recipient="x@example.com",
                    type="clicked",
                    occurred_at=NOW,
                    url=url,
                    machine=machine,
                    unique_first=not machine,
                )
            )
    one = (await client.get("/api/v1/campaigns/autumn", headers=tenant_a.auth)).json()
    assert one["stats"]["sent"] == 10 and one["state"] == "active"
    hourly = (await client.get("/api/v1/campaigns/autumn/timeline", headers=tenant_a.auth)).json()
    assert [(p["start"], p["sent"]) for p in hourly["points"]] == [
        ("2026-11-23T10:00:00Z", 4),
        ("2026-11-23T11:00:00Z", 6),
    ]
    daily = (
        await client.get("/api/v1/campaigns/autumn/timeline?bucket=day", headers=tenant_a.auth)
    ).json()
    assert [(p["start"], p["sent"], p["delivered"]) for p in daily["points"]] == [
        ("2026-11-23T00:00:00Z", 10, 3)
    ]
    _error(
        await client.get("/api/v1/campaigns/autumn/timeline?bucket=week", headers=tenant_a.auth),
        400,
        "invalid_parameter",
    )
    links_ = (await client.get("/api/v1/campaigns/autumn/links", headers=tenant_a.auth)).json()
    assert links_["links"] == [
        {"url": "https://a.example/", "clicks": 2, "unique": 1, "human": 1},
        {"url": "https://b.example/", "clicks": 1, "unique": 1, "human": 1},
    ]


async def test_pause_resume_cancel_move_deliveries(
    client: httpx.AsyncClient, db: Database, tenant_a: Tenant
) -> None:
    campaign_id = await _campaign(db, tenant_a.id, "winter")
    message_id = await rows.message(db, tenant_a.id, campaign_id=campaign_id)
    states = ["queued", "deferred", "sending", "delivered"]
    ids = [
        await rows.delivery(db, message_id, f"r{i}@example.com", state=s, campaign_id=campaign_id)
        for i, s in enumerate(states)
    ]

    async def current() -> list[str]:
        async with db.read() as conn:
            found = dict(
                list(
                    await conn.execute(
                        select(deliveries.c.id, deliveries.c.state).where(deliveries.c.id.in_(ids))
                    )
                )
            )
        return [found[i] for i in ids]

    r = (await client.post("/api/v1/campaigns/winter/pause", headers=tenant_a.auth)).json()
    assert r == {"id": "winter", "state": "paused", "deliveries_changed": 2}
    assert await current() == ["held", "held", "sending", "delivered"]
    r = (await client.post("/api/v1/campaigns/winter/resume", headers=tenant_a.auth)).json()
    assert r["state"] == "active" and await current() == [
        "queued",
        "queued",
        "sending",
        "delivered",
    ]
    r = (await client.post("/api/v1/campaigns/winter/cancel", headers=tenant_a.auth)).json()
    assert r["state"] == "cancelled" and r["deliveries_changed"] == 2
    assert await current() == ["cancelled", "cancelled", "sending", "delivered"]


async def test_health_ready_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    m = await client.get("/metrics")
    assert m.status_code == 200 and "relay_event_buffer_size" in m.text
    assert m.headers["content-type"].startswith("text/plain")


async def test_times_past_year_9999_are_400(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    for value in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00%2B01:00"):
        r = await client.get(f"/api/v1/stats/overview?from={value}", headers=tenant_a.auth)
        _error(r, 400, "invalid_parameter")
    r = await client.post(
        "/api/v1/suppressions",
        headers=tenant_a.auth,
        json={"email": "a@b.example", "expires_at": "9999-12-31T23:59:59-01:00"},
    )
    _error(r, 400, "invalid_parameter")


async def test_release_held_message_is_tenant_scoped(
    client: httpx.AsyncClient, db: Database, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    message_id = await rows.message(db, tenant_a.id)
    held = [await rows.delivery(db, message_id, f"h{i}@example.com", state="held") for i in (1, 2)]
    done = await rows.delivery(db, message_id, "d@example.com", state="delivered")
    url = f"/api/v1/messages/{message_id}/release"
    _error(await client.post(url, headers=tenant_b.auth), 404, "not_found")
    _error(
        await client.post("/api/v1/messages/x1/release", headers=tenant_a.auth),
        400,
        "invalid_parameter",
    )
    async with db.read() as conn:
        before = dict(list(await conn.execute(select(deliveries.c.id, deliveries.c.state))))
    assert {before[i] for i in held} == {"held"}
    r = await client.post(url, headers=tenant_a.auth)
    assert r.status_code == 200 and r.json() == {"id": message_id, "released": 2}
    async with db.read() as conn:
        after = dict(list(await conn.execute(select(deliveries.c.id, deliveries.c.state))))
    assert [after[i] for i in held] == ["queued", "queued"] and after[done] == "delivered"


async def test_admin_writes_for_a_missing_tenant_are_404(
    client: httpx.AsyncClient, db: Database, admin: Tenant, tenant_a: Tenant
) -> None:
    """Found by schemathesis with an admin key: ?tenant= naming no tenant was a 500."""
    missing = tenant_a.id + 1000
    writes = [
        ("/api/v1/suppressions", {"email": "x@example.com"}),
        ("/api/v1/webhooks", {"url": "https://hooks.example/h"}),
    ]
    for path, body in writes:
        r = await client.post(f"{path}?tenant={missing}", json=body, headers=admin.auth)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] == "not_found"
        r = await client.post(f"{path}?tenant={tenant_a.id}", json=body, headers=admin.auth)
        assert r.status_code == 201 and r.json()["tenant"] == tenant_a.id
