"""`relay suppressions import` as a user runs it: export → import round trips on SQLite and
MariaDB, batches, and bad rows named by line without a traceback."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, select

from relay.config import DatabaseConfig
from relay.store.db import Database
from relay.store.tables import change_counters, suppressions
from tests.test_cli import relay


def _sql(db_url: str, statement):  # type: ignore[no-untyped-def]
    async def run():  # type: ignore[no-untyped-def]
        db = Database.from_config(DatabaseConfig(url=db_url))
        try:
            async with db.write() as conn:
                result = await conn.execute(statement)
                return result.all() if result.returns_rows else None
        finally:
            await db.dispose()

    return asyncio.run(run())


def _counter(db_url: str) -> int:
    query = select(change_counters.c.value).where(change_counters.c.name == "suppressions")
    return int(_sql(db_url, query)[0][0])


def _export(fmt: str, tmp_path: Path, env: dict[str, str]) -> str:
    out = relay("suppressions", "export", "--format", fmt, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _without_ids(csv_text: str) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    for row in rows:
        del row["id"]  # new rows, new ids
    return sorted(rows, key=lambda r: (r["scope"], r["email"]))


def test_export_import_round_trip(tmp_path: Path, db_url: str) -> None:
    env = {"RELAY_DATABASE__URL": db_url}
    for name in ("shop", "news"):
        assert relay("tenants", "add", name, cwd=tmp_path, env=env).returncode == 0
    for args in (
        ["a@example.com", "B@Example.COM", "--tenant", "shop", "--reason", "hard_bounce"],
        ["a@example.com", "--tenant", "news", "--reason", "unsubscribe"],
        ["g@example.org", "--source", "support ticket 12"],
        ["later@example.org", "--ttl", "30d", "--reason", "complaint"],
    ):
        assert relay("suppressions", "add", *args, cwd=tmp_path, env=env).returncode == 0
    as_csv, as_json = _export("csv", tmp_path, env), _export("json", tmp_path, env)
    assert len(_without_ids(as_csv)) == 5

    for text, fmt in ((as_csv, "csv"), (as_json, "json")):
        _sql(db_url, delete(suppressions))
        before = _counter(db_url)
        (tmp_path / f"list.{fmt}").write_text(text)
        out = relay(
            "suppressions",
            "import",
            str(tmp_path / f"list.{fmt}"),
            "--batch",
            "2",
            cwd=tmp_path,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout == "imported 5 rows: 5 added, 0 updated, 0 skipped\n"
        # Three batches of at most 2, each moving the change counter (caches refresh).
        assert _counter(db_url) == before + 3
        assert _without_ids(_export("csv", tmp_path, env)) == _without_ids(as_csv), fmt

    # Again: nothing to do. JSON lines (one object per line) read the same as the array.
    before = _counter(db_url)
    lines = "".join(json.dumps(r) + "\n" for r in json.loads(as_json))
    out = relay("suppressions", "import", "-", "--json", cwd=tmp_path, env=env, stdin=lines)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert (summary["added"], summary["updated"], summary["skipped"]) == (0, 0, {"unchanged": 5})
    assert _without_ids(_export("csv", tmp_path, env)) == _without_ids(as_csv)
    assert _counter(db_url) == before


def test_scope_reason_and_updates(tmp_path: Path, db_url: str) -> None:
    env = {"RELAY_DATABASE__URL": db_url}
    assert relay("tenants", "add", "shop", cwd=tmp_path, env=env).returncode == 0
    plain = "email\nx@example.com\ny@example.com\n"
    out = relay(
        "suppressions", "import", "-", "--tenant", "shop", cwd=tmp_path, env=env, stdin=plain
    )
    assert out.returncode == 0, out.stderr
    listed = json.loads(relay("suppressions", "list", "--json", cwd=tmp_path, env=env).stdout)
    assert {
        (r["scope"], r["email"], r["reason"], r["source"], r["expires_at"]) for r in listed
    } == {
        ("shop", "x@example.com", "manual", "import", None),  # --reason default; manual_ttl 0
        ("shop", "y@example.com", "manual", "import", None),
    }
    # A row that differs replaces the one there (an operator's import, like `add`).
    changed = "email,reason\nx@example.com,complaint\ny@example.com,\n"
    out = relay(
        "suppressions",
        "import",
        "-",
        "--tenant",
        "shop",
        "--reason",
        "unsubscribe",
        cwd=tmp_path,
        env=env,
        stdin=changed,
    )
    assert out.stdout == "imported 2 rows: 0 added, 2 updated, 0 skipped\n", out.stderr
    listed = json.loads(relay("suppressions", "list", "--json", cwd=tmp_path, env=env).stdout)
    assert sorted((r["email"], r["reason"]) for r in listed) == [
        ("x@example.com", "complaint"),
        ("y@example.com", "unsubscribe"),
    ]


def test_bad_rows_are_named_by_line(tmp_path: Path, db_url: str) -> None:
    env = {"RELAY_DATABASE__URL": db_url}
    assert relay("tenants", "add", "shop", cwd=tmp_path, env=env).returncode == 0
    text = (
        "scope,email,reason,expires_at\n"
        "shop,ok@example.com,,\n"
        "shop,not-an-address,,\n"
        "nosuch,a@example.com,,\n"
        "global,b@example.com,bogus,\n"
        "global,c@example.com,,tomorrow\n"
        "global,old@example.com,,2001-01-01T00:00:00\n"
        "shop,OK@example.com,,\n"
        "global,d@example.com,,2099-01-01T00:00:00Z\n"
    )
    out = relay("suppressions", "import", "-", cwd=tmp_path, env=env, stdin=text)
    assert out.returncode == 1  # some rows were bad
    assert "Traceback" not in out.stderr
    assert out.stdout == (
        "imported 8 rows: 2 added, 0 updated, 6 skipped (1 duplicate, 1 expired, 4 invalid)\n"
    )
    problems = out.stderr.splitlines()
    assert problems[0].startswith("relay suppressions import: line 3: email 'not-an-address'")
    assert problems[1] == (
        "relay suppressions import: line 4: scope 'nosuch': no such tenant (`relay tenants list`)"
    )
    assert problems[2].startswith("relay suppressions import: line 5: reason 'bogus'")
    assert problems[3] == (
        "relay suppressions import: line 6: expires_at 'tomorrow': expected an ISO-8601 time"
    )
    assert problems[4] == (
        "relay suppressions import: line 8: ok@example.com again (first: line 2)"
    )
    kept = _sql(db_url, select(suppressions.c.email, suppressions.c.expires_at))
    assert sorted(kept) == [
        ("d@example.com", datetime(2099, 1, 1)),  # stored as naive UTC
        ("ok@example.com", None),
    ]


def test_unreadable_input_is_one_line(tmp_path: Path, db_url: str) -> None:
    env = {"RELAY_DATABASE__URL": db_url}
    out = relay("suppressions", "import", "-", cwd=tmp_path, env=env, stdin="mail\nx@y.z\n")
    assert out.returncode == 2
    assert out.stderr == (
        "relay suppressions import: -: no 'email' column in the CSV header ['mail']\n"
    )
    out = relay("suppressions", "import", str(tmp_path / "none.csv"), cwd=tmp_path, env=env)
    assert out.returncode == 2
    assert out.stderr.endswith("none.csv: No such file or directory\n")
    out = relay("suppressions", "import", "-", cwd=tmp_path, env=env, stdin='[{"email": ')
    assert out.returncode == 2 and out.stderr.startswith(
        "relay suppressions import: -: not a JSON array: Expecting value (line 1)"
    ), out.stderr
