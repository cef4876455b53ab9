"""`relay queue list|show|retry|delete`, `relay history` and `relay prune` as an operator runs
them: a real process over real rows on both databases, text and --json, and bad input
(exit 2 naming the option, exit 1 naming the missing message)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from relay.store import stats
from relay.store.db import Database, utcnow
from relay.store.tables import delivery_attempts, messages, stat_counters
from tests import rows
from tests.test_cli import relay


async def _queue(db: Database) -> dict[str, int]:
    tenant = await rows.tenant(db, name="shop")
    campaign = await rows.campaign(db, tenant, name="spring")
    spring = await rows.message(db, tenant, campaign_id=campaign)
    other = await rows.message(db, tenant)
    later = utcnow() + timedelta(hours=1)
    ids = {
        "spring": spring,
        "other": other,
        "deferred": await rows.delivery(
            db,
            spring,
            "d@b.example",
            state="deferred",
            attempts=1,
            next_attempt_at=later,
            last_reply="451 4.7.1 try later",
        ),
        "failed": await rows.delivery(
            db, spring, "f@a.example", state="failed", last_reply="554 5.7.1 listed"
        ),
        "delivered": await rows.delivery(db, spring, "ok@a.example", state="delivered"),
        "queued": await rows.delivery(db, other, "q@a.example"),
    }
    async with db.write() as conn:
        await conn.execute(
            delivery_attempts.insert().values(
                delivery_id=ids["deferred"],
                started_at=utcnow(),
                duration_ms=12,
                transport="smarthost",
                account="primary",
                remote_host="smtp.example.net",
                reply_code=451,
                enhanced_status="4.7.1",
                reply="451 4.7.1 try later",
                result="deferred",
            )
        )
    return ids


def _json(*args: str, cwd: Path, env: dict[str, str]) -> object:
    out = relay(*args, "--json", cwd=cwd, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def test_queue_tools(tmp_path: Path, db: Database, db_url: str) -> None:
    ids = await _queue(db)
    env = {"RELAY_DATABASE__URL": db_url}

    def recipients(*args: str) -> list[str]:
        found = _json("queue", "list", *args, cwd=tmp_path, env=env)
        assert isinstance(found, list)
        return [r["recipient"] for r in found]

    assert recipients() == ["d@b.example", "q@a.example"]  # not final: still in the queue
    assert recipients("--state", "failed") == ["f@a.example"]
    assert recipients("--domain", "B.EXAMPLE") == ["d@b.example"]
    assert recipients("--campaign", "spring") == ["d@b.example"]
    assert recipients("--campaign", "spring", "--state", "delivered") == ["ok@a.example"]
    text = relay("queue", "list", cwd=tmp_path, env=env)
    assert text.stdout.splitlines()[0].split()[:3] == ["ID", "MESSAGE_ID", "TENANT"]
    assert "451 4.7.1 try later" in text.stdout and text.stderr == ""
    capped = relay("queue", "list", "--limit", "1", cwd=tmp_path, env=env)
    assert len(capped.stdout.splitlines()) == 2
    assert "showing the first 1 deliveries; --limit N shows more" in capped.stderr

    shown = relay("queue", "show", str(ids["spring"]), cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "campaign: spring" in shown.stdout
    assert "to d@b.example (to): deferred, 1 attempt(s), next attempt " in shown.stdout
    assert "to ok@a.example (to): delivered, 0 attempt(s), finished " in shown.stdout
    assert "smtp.example.net" in shown.stdout and "451 4.7.1 try later" in shown.stdout
    detail = _json("queue", "show", str(ids["spring"]), cwd=tmp_path, env=env)
    assert isinstance(detail, dict)
    by_rcpt = {d["recipient"]: d for d in detail["deliveries"]}
    assert by_rcpt["d@b.example"]["attempt_log"][0]["reply_code"] == 451

    history = _json("history", "--campaign", "spring", cwd=tmp_path, env=env)
    assert isinstance(history, list)
    assert {h["recipient"]: h["state"] for h in history} == {
        "d@b.example": "deferred",
        "f@a.example": "failed",
        "ok@a.example": "delivered",
    }
    by_email = _json("history", "--email", "F@A.example", cwd=tmp_path, env=env)
    assert isinstance(by_email, list) and by_email[0]["last_reply"] == "554 5.7.1 listed"

    # retry: the failed and deferred deliveries of one message, then every deferred one.
    assert _json("queue", "retry", str(ids["spring"]), cwd=tmp_path, env=env) == {"requeued": 2}
    assert recipients("--state", "queued") == ["d@b.example", "f@a.example", "q@a.example"]
    assert _json("queue", "retry", "--all-deferred", cwd=tmp_path, env=env) == {"requeued": 0}
    # delete: unsent deliveries become cancelled, kept for history.
    deleted = relay("queue", "delete", str(ids["other"]), cwd=tmp_path, env=env)
    assert deleted.stdout.strip() == f"message {ids['other']}: 1 delivery(ies) cancelled"
    assert recipients("--state", "cancelled") == ["q@a.example"]

    missing = relay("queue", "retry", "999999", cwd=tmp_path, env=env)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "relay: no message with id 999999 (see `relay queue list`)"
    for args in (["queue", "list", "--limit", "0"], ["history", "--email", "x@y", "--limit", "-1"]):
        bad = relay(*args, cwd=tmp_path, env=env)
        assert bad.returncode == 2 and "argument --limit: must be at least 1" in bad.stderr


async def test_prune_from_the_command_line(tmp_path: Path, db: Database, db_url: str) -> None:
    tenant = await rows.tenant(db, name="shop")
    old = utcnow() - timedelta(days=3)
    done = await rows.message(db, tenant, received_at=old)
    await rows.delivery(db, done, "a@x.example", state="delivered")
    pending = await rows.message(db, tenant, received_at=old)
    await rows.delivery(db, pending, "b@x.example", state="deferred")
    async with db.write() as conn:
        await stats.bump(conn, tenant, None, "delivered", old)
    env = {"RELAY_DATABASE__URL": db_url}

    kept = _json("prune", cwd=tmp_path, env=env)  # retention.messages_days = 30
    assert kept == {
        "bodies": 0,
        "events": 0,
        "expired_suppressions": 0,
        "messages_days": 30,
        "events_days": 365,
    }
    pruned = relay("prune", "--messages-days", "1", "--batch", "1", cwd=tmp_path, env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("pruned 1 message bodies older than 1 days")
    async with db.read() as conn:
        raws = dict((await conn.execute(select(messages.c.id, messages.c.raw))).all())
        counted = (await conn.execute(select(func.sum(stat_counters.c.count)))).scalar()
    assert raws[done] is None and raws[pending] is not None  # still being sent: kept
    assert counted == 1  # stats survive pruning
    shown = relay("queue", "show", str(done), cwd=tmp_path, env=env)
    assert "pruned_at: 20" in shown.stdout  # the message and its history stay

    for option, value in (("--messages-days", "0"), ("--events-days", "-3"), ("--batch", "x")):
        bad = relay("prune", option, value, cwd=tmp_path, env=env)
        assert bad.returncode == 2, bad.stdout
        assert f"argument {option}:" in bad.stderr and "Traceback" not in bad.stderr
