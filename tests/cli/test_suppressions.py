"""`relay suppressions …` and `relay bounces classify` as a user runs them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tests.conftest import SHARED
from tests.test_cli import relay


def test_suppressions_flow(tmp_path: Path, db_url: str) -> None:
    env = {"RELAY_DATABASE__URL": db_url}
    assert relay("tenants", "add", "shop", cwd=tmp_path, env=env).returncode == 0

    out = relay(
        "suppressions",
        "add",
        "A@Example.COM",
        "b@example.com",
        "--tenant",
        "shop",
        "--reason",
        "hard_bounce",
        "--json",
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    added = json.loads(out.stdout)
    assert added["added"] == ["a@example.com", "b@example.com"]
    assert added["expires_at"]  # hard_bounce has a default 90-day lifetime
    out = relay("suppressions", "add", "g@example.org", "--json", cwd=tmp_path, env=env)
    assert json.loads(out.stdout)["expires_at"] is None  # manual: forever
    out = relay("suppressions", "add", "old@example.org", "--ttl", "1s", cwd=tmp_path, env=env)
    assert out.returncode == 0 and "suppressed old@example.org" in out.stdout

    listed = json.loads(relay("suppressions", "list", "--json", cwd=tmp_path, env=env).stdout)
    assert {(r["scope"], r["email"], r["reason"]) for r in listed} >= {
        ("shop", "a@example.com", "hard_bounce"),
        ("global", "g@example.org", "manual"),
    }
    shop = relay("suppressions", "list", "--tenant", "shop", "--json", cwd=tmp_path, env=env)
    assert sorted(r["email"] for r in json.loads(shop.stdout)) == ["a@example.com", "b@example.com"]
    table = relay("suppressions", "list", "--limit", "1", cwd=tmp_path, env=env)
    assert "EMAIL" in table.stdout and "--after" in table.stderr

    exported = relay("suppressions", "export", "--format", "csv", cwd=tmp_path, env=env)
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert {"a@example.com", "g@example.org"} <= {r["email"] for r in rows}
    as_json = relay("suppressions", "export", "--format", "json", cwd=tmp_path, env=env)
    assert {r["email"] for r in json.loads(as_json.stdout)} == {r["email"] for r in rows}

    removed = relay(
        "suppressions",
        "remove",
        "a@example.com",
        "--tenant",
        "shop",
        "--json",
        cwd=tmp_path,
        env=env,
    )
    assert removed.returncode == 0 and json.loads(removed.stdout)["removed"] == ["a@example.com"]
    again = relay(
        "suppressions", "remove", "a@example.com", "--tenant", "shop", cwd=tmp_path, env=env
    )
    assert again.returncode == 1 and "not suppressed" in again.stdout

    import time

    time.sleep(1.1)  # the 1s TTL above must lapse; prune compares with the wall clock
    pruned = relay("suppressions", "prune", "--json", cwd=tmp_path, env=env)
    assert json.loads(pruned.stdout) == {"pruned": 1}


def test_suppressions_bad_input(tmp_path: Path, db_url: str) -> None:
    env = {"RELAY_DATABASE__URL": db_url}
    bad = relay("suppressions", "add", "not-an-address", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "not-an-address" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = relay("suppressions", "add", "a@example.com", "--ttl", "soon", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "--ttl" in bad.stderr
    bad = relay("suppressions", "list", "--tenant", "nobody", cwd=tmp_path, env=env)
    assert bad.returncode == 1 and "nobody" in bad.stderr
    bad = relay("suppressions", "export", "--format", "xml", cwd=tmp_path, env=env)
    assert bad.returncode == 2


def test_bounces_classify_cli(tmp_path: Path) -> None:
    import subprocess
    import sys

    sample = SHARED / "bounces" / "eml" / "lf" / "lhost-postfix-31.eml"
    out = subprocess.run(
        [sys.executable, "-m", "relay", "bounces", "classify"],
        input=f"{sample}\n{tmp_path / 'missing.eml'}\n\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    first, second = (json.loads(line) for line in out.stdout.splitlines())
    assert first["file"] == str(sample)
    assert (
        first["recipients"],
        first["status"],
        first["action"],
        first["kind"],
        first["reason"],
    ) == (["kijitora@gmail.com"], "5.1.1", "failed", "hard", "userunknown")
    assert second["file"].endswith("missing.eml") and "error" in second


def test_bounces_replay_cli(tmp_path: Path, db_url: str) -> None:
    import asyncio

    from relay.config import DatabaseConfig
    from relay.store import reports
    from relay.store.db import Database

    async def store() -> None:
        db = Database.from_config(DatabaseConfig(url=db_url))
        try:
            async with db.write() as conn:
                await reports.store_inbound(
                    conn,
                    "bounces+x@bounces.example",
                    "",
                    b"From: a@example.org\r\nSubject: Out of office\r\n"
                    b"Auto-Submitted: auto-replied\r\n\r\nAway.\r\n",
                )
        finally:
            await db.dispose()

    asyncio.run(store())
    env = {"RELAY_DATABASE__URL": db_url}
    out = relay("bounces", "replay", "--json", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert (row["processed"], row["type"], row["applied"]) == (True, "autoreply", [])
    again = relay("bounces", "replay", "--json", cwd=tmp_path, env=env)
    assert again.returncode == 0 and json.loads(again.stdout) == []
