"""Pool account endpoints: admin only, usage and warm-up day, pause/resume."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
from starlette.applications import Starlette

from relay.config import Config
from relay.render.tokens import Keyring
from relay.store.db import Database
from relay.store.tables import accounts, usage_counters
from relay.web.app import create_app
from tests.web.conftest import NOW, SECRET, Clock, Tenant


def _app(tmp_path: Path, db: Database) -> Starlette:
    config = Config.model_validate(
        {
            "data_dir": str(tmp_path),
            "tracking": {"secret": SECRET},
            "delivery": {
                "mode": "smarthost",
                "accounts": [
                    {"name": "primary", "host": "smtp.example", "daily_limit": 1000},
                    {"name": "fresh", "host": "smtp2.example", "warmup": [50, 100, 200]},
                ],
            },
        }
    )
    return create_app(config, db, keyring=Keyring(SECRET.encode()), clock=Clock())


async def test_accounts_admin_only_with_usage_and_pause(
    tmp_path: Path, db: Database, tenant_a: Tenant, admin: Tenant
) -> None:
    async with db.write() as conn:
        await conn.execute(
            accounts.insert().values(
                name="fresh",
                paused=False,
                consecutive_failures=2,
                warmup_started_at=NOW - timedelta(days=1),
                created_at=NOW,
                updated_at=NOW,
            )
        )
        await conn.execute(
            usage_counters.insert().values(
                subject="account:primary",
                window="day",
                window_start=NOW.replace(hour=0),
                count=321,
                bounces=4,
            )
        )
    transport = httpx.ASGITransport(app=_app(tmp_path, db))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/api/v1/accounts", headers=tenant_a.auth)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert (
            await client.post("/api/v1/accounts/primary/pause", headers=tenant_a.auth)
        ).status_code == 403
        items = {
            a["id"]: a
            for a in (await client.get("/api/v1/accounts", headers=admin.auth)).json()["items"]
        }
        assert items["primary"]["sent_today"] == 321 and items["primary"]["daily_limit"] == 1000
        assert items["fresh"]["warmup_day"] == 2 and items["fresh"]["daily_limit"] == 100
        assert items["fresh"]["consecutive_failures"] == 2
        r = await client.post(
            "/api/v1/accounts/primary/pause", json={"reason": "blocklisted"}, headers=admin.auth
        )
        assert r.json() == {"id": "primary", "paused": True, "paused_reason": "blocklisted"}
        items = {
            a["id"]: a
            for a in (await client.get("/api/v1/accounts", headers=admin.auth)).json()["items"]
        }
        assert (
            items["primary"]["paused"] is True
            and items["primary"]["paused_reason"] == "blocklisted"
        )
        await client.post("/api/v1/accounts/primary/resume", headers=admin.auth)
        items = {
            a["id"]: a
            for a in (await client.get("/api/v1/accounts", headers=admin.auth)).json()["items"]
        }
        assert items["primary"]["paused"] is False
        assert (
            await client.post("/api/v1/accounts/nope/pause", headers=admin.auth)
        ).status_code == 404
