"""`relay status` as an operator runs it: a real process over real rows, text and --json,
and a database that is down (one line, exit 1)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from relay.store import accounts, suppressions
from relay.store.db import Database, utcnow
from relay.store.tables import recipient_events
from tests import rows
from tests.test_cli import relay


async def _fill(db: Database) -> None:
    tenant = await rows.tenant(db)
    msg = await rows.message(db, tenant)
    await rows.delivery(db, msg, "a@x.example", created_at=utcnow() - timedelta(hours=2))
    await rows.delivery(db, msg, "b@x.example", state="deferred")
    await rows.delivery(db, msg, "c@x.example", state="delivered")
    now = utcnow()
    async with db.write() as conn:
        for kind in ("delivered", "delivered", "delivered", "complained"):
            await conn.execute(
                recipient_events.insert().values(
                    tenant_id=tenant, recipient="r@x.example", type=kind, occurred_at=now
                )
            )
        await suppressions.add(conn, tenant, "b@x.example", "hard_bounce")
        await accounts.bump_usage(conn, "account:primary", "day", accounts.day_start(now), 7)
    await accounts.ensure(db, ["primary", "backup"], now)
    await accounts.set_paused(db, "backup", True, now, "421 too many connections")


async def test_status_text_and_json(tmp_path: Path, db: Database, db_url: str) -> None:
    await _fill(db)
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[database]\nurl = "{db_url}"\n[delivery]\nmode = "smarthost"\n'
        '[[delivery.accounts]]\nname = "primary"\nhost = "127.0.0.1"\ndaily_limit = 500\n'
        '[[delivery.accounts]]\nname = "backup"\nhost = "127.0.0.1"\n'
    )
    out = relay("-c", str(config), "status", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["database"]["reachable"] and report["database"]["current"]
    assert report["database"]["newest_message_age_s"] is not None
    assert report["queue"]["in_queue"] == 2
    assert report["queue"]["oldest_queued_age_s"] >= 7200
    assert report["rates_last_hour"]["complaint"] == round(1 / 3, 4)
    assert report["suppressions"] == {"hard_bounce": 1}
    by_name = {a["name"]: a for a in report["accounts"]}
    assert by_name["primary"]["sent_today"] == 7
    assert by_name["primary"]["daily_limit"] == 500
    assert by_name["primary"]["health"] == "ok"
    assert by_name["backup"]["health"].startswith("paused (421 too many connections)")

    text = relay("-c", str(config), "status", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "schema current" in text.stdout
    assert "2 in the queue; oldest queued 2h" in text.stdout
    assert "complaint rate 33.33%" in text.stdout
    assert "7/500" in text.stdout and "7/∞" not in text.stdout


def test_status_with_the_database_down(tmp_path: Path) -> None:
    env = {"RELAY_DATABASE__URL": "mysql+aiomysql://relay:pw@127.0.0.1:1/relay"}
    out = relay("status", cwd=tmp_path, env=env)
    assert out.returncode == 1
    assert out.stdout.startswith("database: UNREACHABLE: cannot reach the database")
    assert "Traceback" not in out.stdout + out.stderr
    assert ":pw@" not in out.stdout + out.stderr
    as_json = relay("status", "--json", cwd=tmp_path, env=env)
    assert json.loads(as_json.stdout)["database"]["reachable"] is False


def test_status_before_relay_migrate(tmp_path: Path) -> None:
    out = relay("status", cwd=tmp_path)  # the default SQLite file, still empty
    assert out.returncode == 1
    assert out.stdout == (
        "database: reachable, but the database has no relay schema yet: run `relay migrate` "
        "(or set database.auto_migrate = true)\n"
    )
    assert out.stderr == ""
    as_json = json.loads(relay("status", "--json", cwd=tmp_path).stdout)
    assert as_json["database"]["reachable"] and not as_json["database"]["current"]
