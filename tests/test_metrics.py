"""/metrics of a real `relay serve`: queue gauges from the database, SMTP sessions, accept
latency, delivery outcomes and attempt durations, event buffer; and the gauge bookkeeping."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from relay import metrics
from relay.config import DatabaseConfig
from relay.store.db import Database, utcnow
from relay.store.tenants import get_tenant
from tests import rows
from tests.peers import RecordingServer, free_port
from tests.serving import Served, SmtpClient, html_message, tenant_with_login, write_config


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _held_delivery(url: str) -> None:
    """A delivery of a paused campaign, ten minutes old: the queue gauges must show it."""
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        tenant = await get_tenant(db, "shop")
        msg = await rows.message(db, tenant.id)
        await rows.delivery(
            db, msg, "held@dest.example", state="held", created_at=utcnow() - timedelta(minutes=10)
        )
    finally:
        await db.dispose()


async def test_metrics_of_a_running_process(tmp_path: Path, db_url: str) -> None:
    login = await tenant_with_login(db_url)
    await _held_delivery(db_url)
    async with RecordingServer() as mx:
        served = Served(write_config(tmp_path, db_url, mx.port), tmp_path)
        try:
            await served.ready()
            for _ in range(3):  # clients that leave at once must not hold a session slot
                _, writer = await asyncio.open_connection("127.0.0.1", served.smtp_port)
                writer.close()
            client, _ = await SmtpClient.connect(served.smtp_port)
            assert (await client.login(*login)).startswith("235")
            await client.begin(["r1@dest.example"])
            await client.send_raw(html_message("r1@dest.example", "hi") + b".\r\n")
            assert (await client.reply()).startswith("250")
            await client.command("QUIT")
            await client.close()
            deadline = time.monotonic() + 15
            while not mx.messages:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await served.wait_for_event("delivery.delivered")
            while len(served.events("smtp.session")) < 5:  # ready()'s probe, 3 quick, ours
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient() as http:
                r = await http.get(f"http://127.0.0.1:{served.http_port}/metrics")
            served.signal(signal.SIGTERM)
            assert await served.wait(30) == 0
        finally:
            served.kill()
    assert r.status_code == 200
    got = _samples(r.text)
    assert got[("relay_queue_depth", (("state", "held"),))] == 1
    assert got[("relay_queue_oldest_age_seconds", ())] >= 600
    assert got[("relay_smtp_sessions_total", ())] == 5
    assert got[("relay_smtp_sessions_open", ())] == 0
    assert got[("relay_messages_accepted_total", ())] == 1
    assert got[("relay_intake_seconds_count", ())] == 1
    assert got[("relay_deliveries_total", (("outcome", "delivered"),))] == 1
    assert got[("relay_delivery_seconds_count", (("transport", "smarthost"),))] == 1
    assert ("relay_event_buffer_size", ()) in got
    assert ("relay_tracking_events_dropped_total", ()) in got
    # The rest of `relay status` was read at start-up too (then every minute).
    assert got[("relay_database_up", ())] == 1
    assert ("relay_newest_message_age_seconds", ()) in got


def test_status_gauges_from_a_report() -> None:
    report = {
        "database": {"newest_message_age_s": 42},
        "queue": {"by_state": {"queued": 2}, "oldest_queued_age_s": 90},
        "last_hour": {"delivered": 8, "bounced": 1, "complained": 1},
        "rates_last_hour": {"bounce": 0.1, "complaint": None},
        "suppressions": {"hard_bounce": 3},
        "accounts": [
            {"name": "a", "paused": True, "sent_today": 7, "consecutive_failures": 5},
        ],
    }
    metrics.set_status(report)
    report["suppressions"] = {}
    metrics.set_status(report)
    got = _samples(metrics.generate_latest().decode())
    assert got[("relay_last_hour_events", (("type", "delivered"),))] == 8
    assert got[("relay_last_hour_rate", (("kind", "bounce"),))] == 0.1
    assert got[("relay_last_hour_rate", (("kind", "complaint"),))] == 0
    assert got[("relay_suppressions", (("reason", "hard_bounce"),))] == 0  # gone: 0
    assert got[("relay_account_paused", (("account", "a"),))] == 1
    assert got[("relay_account_sent_today", (("account", "a"),))] == 7
    assert got[("relay_account_consecutive_failures", (("account", "a"),))] == 5
    assert got[("relay_newest_message_age_seconds", ())] == 42
    assert got[("relay_queue_oldest_age_seconds", ())] == 90


async def test_delivery_only_process_serves_metrics_on_its_own_port(
    tmp_path: Path, db_url: str
) -> None:
    await tenant_with_login(db_url)
    await _held_delivery(db_url)
    port = free_port()
    async with RecordingServer() as mx:
        config = write_config(
            tmp_path, db_url, mx.port, service=f'metrics_listen = "127.0.0.1:{port}"'
        )
        served = Served(config, tmp_path, "--role", "delivery")
        try:
            await served.wait_for_event("delivery.started")
            async with httpx.AsyncClient() as http:
                # Until the listener answers and the first queue reading (taken beside it,
                # in the background) is in: a loaded machine can serve a scrape before it.
                deadline = time.monotonic() + 10
                while True:
                    try:
                        r = await http.get(f"http://127.0.0.1:{port}/metrics")
                        if "relay_queue_depth{" in r.text:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, "no queue reading on /metrics in 10 s"
                    await asyncio.sleep(0.1)
                missing = await http.get(f"http://127.0.0.1:{port}/other")
            served.signal(signal.SIGTERM)
            assert await served.wait(30) == 0
        finally:
            served.kill()
    assert r.status_code == 200 and missing.status_code == 404
    got = _samples(r.text)
    assert got[("relay_queue_depth", (("state", "held"),))] == 1
    assert ("relay_deliveries_total", (("outcome", "delivered"),)) not in got  # none yet


def test_queue_gauges_drop_vanished_states_to_zero() -> None:
    metrics.set_queue({"queued": 3, "deferred": 2}, 42.0)
    metrics.set_queue({"queued": 1}, None)
    got = _samples(metrics.generate_latest().decode())
    assert got[("relay_queue_depth", (("state", "queued"),))] == 1
    assert got[("relay_queue_depth", (("state", "deferred"),))] == 0
    assert got[("relay_queue_oldest_age_seconds", ())] == 0
