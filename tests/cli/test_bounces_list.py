"""`relay bounces list`: the operator sees stored reports, the unmatched ones kept for them."""

from __future__ import annotations

import json
from pathlib import Path

from relay.inbound import receive
from relay.store.db import Database
from tests import rows
from tests.test_cli import relay
from tests.test_inbound import CONFIG, KEYRING, dsn, verp


async def test_unmatched_reports_are_listed(tmp_path: Path, db: Database, db_url: str) -> None:
    tenant = await rows.tenant(db)
    message = await rows.message(db, tenant)
    did = await rows.delivery(db, message, recipient="gone@example.net", state="delivered")
    bounce = dsn("gone@example.net", "5.1.1", "550 5.1.1 User unknown")
    matched = await receive(db, KEYRING, CONFIG, "", [verp(did)], bounce)
    stray = dsn("who@example.org", "5.1.1", "550 5.1.1 User unknown", message_id="<x@y>")
    unmatched = await receive(db, KEYRING, CONFIG, "", ["bounces@bounce.relay.example"], stray)
    assert matched is not None and matched.matched
    assert unmatched is not None and not unmatched.matched
    env = {"RELAY_DATABASE__URL": db_url}
    every = relay("bounces", "list", "--json", cwd=tmp_path, env=env)
    assert every.returncode == 0, every.stderr
    assert [(r["matched"], r["type"]) for r in json.loads(every.stdout)] == [
        (False, "dsn"),
        (True, "dsn"),
    ]
    only = relay("bounces", "list", "--unmatched", "--json", cwd=tmp_path, env=env)
    (row,) = json.loads(only.stdout)
    assert row["rcpt"] == "bounces@bounce.relay.example"
    assert row["unmatched"] == ["who@example.org"]
    table = relay("bounces", "list", "--unmatched", cwd=tmp_path, env=env)
    assert table.returncode == 0 and "who@example.org" in table.stdout
