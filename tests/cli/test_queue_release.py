"""`relay queue release`: held mail (tenant or credential on hold) sent per message or in
bulk by tenant or SMTP login, as an operator runs it; a paused campaign's mail stays held;
bad input is one line with the right exit code. Then the scheduler leases what was released."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from relay.store import deliveries as queue
from relay.store.db import Database, utcnow
from relay.store.tables import deliveries
from tests import rows
from tests.test_cli import relay


async def _states(db: Database) -> dict[str, str]:
    async with db.read() as conn:
        found = await conn.execute(select(deliveries.c.recipient, deliveries.c.state))
        return {r.recipient: r.state for r in found}


async def test_release_per_message_then_by_login_then_by_tenant(
    tmp_path: Path, db: Database, db_url: str
) -> None:
    staging = await rows.tenant(db, name="staging", hold=True)
    other = await rows.tenant(db, name="other")
    login = await rows.credential(db, other, username="app-dev", hold=True)
    one = await rows.message(db, staging)
    two = await rows.message(db, staging)
    by_login = await rows.message(db, other, credential_id=login)
    spring = await rows.campaign(db, staging, name="spring", state="paused")
    paused = await rows.message(db, staging, campaign_id=spring)
    await rows.delivery(db, one, "a@x.example", state="held")
    await rows.delivery(db, one, "b@x.example", state="held")
    await rows.delivery(db, two, "c@x.example", state="held")
    await rows.delivery(db, two, "d@x.example", state="delivered")
    await rows.delivery(db, by_login, "e@x.example", state="held")
    await rows.delivery(db, paused, "f@x.example", state="held")
    config = tmp_path / "relay.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n')

    def run(*args: str) -> dict[str, int]:
        out = relay("-c", str(config), "queue", "release", *args, "--json", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    assert run(str(one)) == {"released": 2}
    assert (await _states(db))["c@x.example"] == "held"  # another message of the tenant
    assert run("--credential", "app-dev") == {"released": 1}
    assert run("--tenant", "staging") == {"released": 1}  # c; not the paused campaign's f
    assert await _states(db) == {
        "a@x.example": "queued",
        "b@x.example": "queued",
        "c@x.example": "queued",
        "d@x.example": "delivered",
        "e@x.example": "queued",
        "f@x.example": "held",
    }
    leased = await queue.lease_due(db, "w1", 10, utcnow(), 60)
    assert sorted(d.recipient for d in leased) == [f"{c}@x.example" for c in "abce"]

    nothing = relay("-c", str(config), "queue", "release", cwd=tmp_path)
    assert nothing.returncode == 2 and len(nothing.stderr.strip().splitlines()) == 1
    assert "--tenant" in nothing.stderr
    unknown = relay("-c", str(config), "queue", "release", "--tenant", "nope", cwd=tmp_path)
    assert unknown.returncode == 1 and "no tenant named 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr + nothing.stderr
