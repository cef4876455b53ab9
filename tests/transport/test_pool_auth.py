"""Failover on AUTH refusal, against real servers that speak AUTH: a pool account whose
login is refused (535 5.7.8) is skipped for the next account, paused at once with the reason
"authentication refused" (shared through the database), and nothing of the message reaches
the refusing server. An account's password may come from an environment variable it names
(`password_env`). Both databases."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import select

from relay.config import AccountConfig, Config, DeliveryConfig
from relay.errors import ConfigError
from relay.scheduler import Scheduler
from relay.store import accounts
from relay.store.db import Database, utcnow
from relay.store.tables import deliveries, delivery_attempts
from relay.transport.pool import SmarthostPool
from tests import rows
from tests.peers import RecordingServer

BODY = b"A line only the message carries."


async def test_auth_refused_account_is_skipped_and_paused(db: Database) -> None:
    now = utcnow()
    raw = rows.DEFAULT_RAW + BODY + b"\r\n"
    msg = await rows.message(db, await rows.tenant(db), raw=raw)
    recipients = [f"u{i}@example.com" for i in range(3)]
    for r in recipients:
        await rows.delivery(db, msg, r, next_attempt_at=now, created_at=now)
    async with (
        RecordingServer(auth={"alice": "pw-a"}) as refusing,
        RecordingServer(auth={"bob": "pw-b"}) as good,
    ):
        refusing.refuse_auth("alice")  # a configured account, turned down
        pool_accounts = [
            AccountConfig(
                name="acct0", host="127.0.0.1", port=refusing.port, tls="none",
                username="alice", password="pw-a",
            ),
            AccountConfig(
                name="acct1", host="127.0.0.1", port=good.port, tls="none",
                username="bob", password="pw-b",
            ),
        ]  # fmt: skip
        config = Config(
            delivery=DeliveryConfig(
                mode="smarthost", accounts=pool_accounts, connect_timeout=2.0, workers=1
            )
        )
        # round-robin starts with acct0; a pause only after 5 plain failures, so the pause
        # seen below can only come from the AUTH refusal
        pool = SmarthostPool(config.delivery, "relay.test", rng=random.Random(1))
        clock = lambda: now + timedelta(seconds=1)  # noqa: E731
        s = Scheduler(config, db, pool, clock=clock, rng=random.Random(1), owner="w1")
        await s.run_until_idle()
        await s.sync_accounts()  # writes the pause for every node
        await pool.close()

    assert refusing.logins and {ok for _, ok in refusing.logins} == {False}
    assert {user for user, _ in refusing.logins} == {"alice"}
    assert refusing.messages == []
    seen = b"".join(refusing.chunks).upper()
    assert b"MAIL FROM" not in seen and b"RCPT TO" not in seen and BODY.upper() not in seen
    assert sorted(r for m in good.messages for r in m.rcpt_tos) == recipients
    assert all(BODY in m.data for m in good.messages)

    assert pool.accounts[0].paused_reason == "authentication refused"
    by_name = {r.name: r for r in await accounts.read_all(db, now)}
    assert by_name["acct0"].paused and by_name["acct0"].paused_reason == "authentication refused"
    assert not by_name["acct1"].paused
    async with db.read() as conn:
        done = list(await conn.execute(select(deliveries.c.state, deliveries.c.account)))
        tried = list(await conn.execute(select(delivery_attempts.c.account)))
    assert set(done) == {("delivered", "acct1")}
    assert {a.account for a in tried} == {"acct1"}  # the refusal is not a delivery attempt


async def test_account_password_from_the_environment(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`password_env` names a variable: its value is what the upstream's AUTH receives."""
    now = utcnow()
    msg = await rows.message(db, await rows.tenant(db))
    await rows.delivery(db, msg, "a@example.com", next_attempt_at=now, created_at=now)
    monkeypatch.setenv("RELAY_TEST_POOL_PASSWORD", "from-the-env")
    async with RecordingServer(auth={"carol": "from-the-env"}) as upstream:
        account = AccountConfig(
            name="acct0", host="127.0.0.1", port=upstream.port, tls="none",
            username="carol", password="inline-is-not-used",
            password_env="RELAY_TEST_POOL_PASSWORD",
        )  # fmt: skip
        config = Config(
            delivery=DeliveryConfig(mode="smarthost", accounts=[account], connect_timeout=2.0)
        )
        pool = SmarthostPool(config.delivery, "relay.test", rng=random.Random(1))
        s = Scheduler(config, db, pool, rng=random.Random(1), owner="w1")
        await s.run_until_idle()
        await pool.close()
    assert upstream.logins == [("carol", True)]
    assert [m.rcpt_tos for m in upstream.messages] == [["a@example.com"]]


def test_account_password_env_unset_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELAY_TEST_POOL_PASSWORD", raising=False)
    account = AccountConfig(name="acct0", host="127.0.0.1", password_env="RELAY_TEST_POOL_PASSWORD")
    config = DeliveryConfig(mode="smarthost", accounts=[account])
    with pytest.raises(ConfigError) as info:
        SmarthostPool(config, "relay.test")
    assert info.value.key == "delivery.accounts.0.password_env"
    assert "'RELAY_TEST_POOL_PASSWORD' is not set" in str(info.value)
