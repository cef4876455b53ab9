"""Web benchmarks: stats API latency over a large data set, and open-pixel throughput.

`stats`: fills a database with N deliveries and 3N events (bulk inserts, with the matching
stat counters), then times GET /stats/overview and GET /campaigns/{id} (p50/p99) through
the ASGI app. `pixel`: serves the web app with uvicorn (httptools, uvloop) in a child
process and loads /track/open from another process: with `wrk` as fast as it can
(saturation), or with `--rate N` at a fixed offered rate with `h2load --rps` (Debian
nghttp2-client), which is how a latency target is measured.

    .venv/bin/python -m bench.web_bench stats --url sqlite+aiosqlite:///var/b.db -n 1000000
    .venv/bin/python -m bench.web_bench pixel --seconds 5 --connections 100 --runs 3 --baseline
    .venv/bin/python -m bench.web_bench pixel --rate 5000 --seconds 25 --runs 3 --baseline
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import Column, Integer, MetaData, Table, func, select

from relay.config import Config, DatabaseConfig
from relay.render.tokens import Keyring, TokenData, TokenKind
from relay.store import stats, tenants
from relay.store.db import Database, upgrade
from relay.store.tables import campaigns, deliveries, messages, recipient_events, stat_counters
from relay.web.app import create_app
from relay.web.pixel import GIF
from relay.web.pixel import GIF_START as PIXEL_START

SECRET = "bench-tracking-secret-0123456789"
START = datetime(2026, 10, 1)
RANGE = "/api/v1/stats/overview?from=2026-10-01T00:00:00Z&to=2026-10-05T00:00:00Z"


async def fill(db: Database, n_deliveries: int, n_campaigns: int = 20) -> tuple[int, str]:
    """Tenant, campaigns, one message per 1,000 deliveries, deliveries, 3 events each.

    Rows are generated inside the database (INSERT … SELECT over the messages × a 1,000-row
    sequence, then deliveries × 3 event kinds), 100 messages per transaction; the matching
    stat counters are computed here and written with `stats.bump_many`, as the app would.
    """
    tenant = await tenants.add_tenant(db, f"bench-{random.randrange(10**9)}")
    _key, secret = await tenants.create_api_key(db, tenant)
    n_messages = max(1, n_deliveries // 1000)
    per_message = min(1000, n_deliveries)
    mysql = db.is_mysql
    async with db.write() as conn:
        result = await conn.execute(
            campaigns.insert().returning(campaigns.c.id, sort_by_parameter_order=True),
            [
                {
                    "tenant_id": tenant.id,
                    "name": f"campaign-{i}",
                    "state": "active",
                    "settings": {},
                    "created_at": START,
                }
                for i in range(n_campaigns)
            ],
        )
        camp_ids = [int(r.id) for r in result]
        result = await conn.execute(
            messages.insert().returning(messages.c.id, sort_by_parameter_order=True),
            [
                {
                    "tenant_id": tenant.id,
                    "campaign_id": camp_ids[i % n_campaigns],
                    "size": 1000,
                    "raw": None,
                    "options": {},
                    "received_at": START,
                }
                for i in range(n_messages)
            ],
        )
        msg_ids = [int(r.id) for r in result]
        await conn.run_sync(lambda c: _SEQ.metadata.create_all(c, checkfirst=True))
        await conn.execute(_SEQ.delete())
        await conn.execute(_SEQ.insert(), [{"i": i} for i in range(per_message)])
        if not mysql:
            await conn.exec_driver_sql("PRAGMA cache_size=-400000")  # 400 MB for the indexes
    for lo in range(0, n_messages, 100):
        chunk = msg_ids[lo : lo + 100]
        async with db.write() as conn:
            await conn.exec_driver_sql(_deliveries_sql(mysql, tenant.id, lo, chunk))
            await conn.exec_driver_sql(_events_sql(mysql, tenant.id, chunk))
        done = min(n_deliveries, (lo + len(chunk)) * per_message)
        print(f"\r  {done:,}/{n_deliveries:,} deliveries", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    async with db.write() as conn:
        await conn.run_sync(lambda c: _SEQ.drop(c, checkfirst=True))
        await stats.bump_many(conn, _fill_counts(tenant.id, camp_ids, n_messages * per_message))
    return tenant.id, secret


# A scratch sequence 0..999 to generate rows from (not part of relay's schema).
_SEQ = Table("bench_seq", MetaData(), Column("i", Integer, primary_key=True, autoincrement=False))
_EVENTS = (("delivered", 0), ("opened", 1), ("clicked", 2))  # type, minutes after delivery
START_SQL = START.strftime("%Y-%m-%d %H:%M:%S")


def _deliveries_sql(mysql: bool, tenant_id: int, first_index: int, msg_ids: list[int]) -> str:
    """Delivery i (0-based over the whole fill) is created at START + 7 i seconds."""
    cases = " ".join(f"WHEN {m} THEN {first_index + k}" for k, m in enumerate(msg_ids))
    index = f"((CASE m.id {cases} END) * 1000 + s.i)"
    if mysql:
        at = f"TIMESTAMPADD(SECOND, 7 * {index}, '{START_SQL}')"
        rcpt = f"CONCAT('r', {index}, '@example.com')"
    else:
        seconds = f"'+' || (7 * {index}) || ' seconds'"
        at = f"strftime('%Y-%m-%d %H:%M:%S', '{START_SQL}', {seconds}) || '.000000'"
        rcpt = f"'r' || {index} || '@example.com'"
    ids = ",".join(map(str, msg_ids))
    return (
        "INSERT INTO deliveries (message_id, tenant_id, campaign_id, recipient, recipient_key,"
        " domain, rcpt_type, state, attempts, next_attempt_at, created_at, updated_at, final_at)"
        f" SELECT m.id, m.tenant_id, m.campaign_id, {rcpt}, {rcpt}, 'example.com', 'to',"
        f" 'delivered', 1, {at}, {at}, {at}, {at}"
        " FROM messages m CROSS JOIN bench_seq s"
        f" WHERE m.tenant_id = {tenant_id} AND m.id IN ({ids})"
        " ORDER BY m.id, s.i"
    )


def _events_sql(mysql: bool, tenant_id: int, msg_ids: list[int]) -> str:
    kinds = " UNION ALL ".join(f"SELECT '{t}' AS type, {k} AS k" for t, k in _EVENTS)
    if mysql:
        at = "d.created_at + INTERVAL e.k MINUTE"
    else:
        at = "strftime('%Y-%m-%d %H:%M:%S', d.created_at, '+' || e.k || ' minutes') || '.000000'"
    ids = ",".join(map(str, msg_ids))
    return (
        "INSERT INTO recipient_events (tenant_id, delivery_id, message_id, campaign_id,"
        " recipient, type, occurred_at, unique_first, machine)"
        f" SELECT d.tenant_id, d.id, d.message_id, d.campaign_id, d.recipient_key, e.type, {at},"
        f" 1, 0 FROM deliveries d CROSS JOIN ({kinds}) e"
        f" WHERE d.tenant_id = {tenant_id} AND d.message_id IN ({ids}) ORDER BY d.id, e.k"
    )


def _fill_counts(tenant_id: int, camp_ids: list[int], n: int) -> Counter[stats.CounterKey]:
    """The counters the app would have bumped for the generated rows (by event time)."""
    per_hour: Counter[tuple[int, str, int]] = Counter()  # campaign, kind, hours after START
    for i in range(n):
        camp, at_s = camp_ids[(i // 1000) % len(camp_ids)], 7 * i
        per_hour[(camp, "sent", at_s // 3600)] += 1
        for kind, minutes in _EVENTS:
            per_hour[(camp, kind, (at_s + 60 * minutes) // 3600)] += 1
    counts: Counter[stats.CounterKey] = Counter()
    for (camp, kind, hour), k in per_hour.items():
        for metric in _EVENT_METRICS[kind]:
            counts[(tenant_id, camp, START + timedelta(hours=hour), metric)] += k
    return counts


_EVENT_METRICS = {
    "sent": ("sent",),
    "delivered": ("delivered",),
    "opened": ("opened", "opened_unique", "opened_human", "opened_unique_human"),
    "clicked": ("clicked", "clicked_unique", "clicked_human", "clicked_unique_human"),
}


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def bench_stats(url: str, n: int, requests: int, reuse: bool) -> None:
    db = Database.from_config(DatabaseConfig(url=url))
    await upgrade(db.engine)
    t0 = time.perf_counter()
    found = [t for t in await tenants.list_tenants(db) if t.name.startswith("bench-")]
    if reuse and found:
        tenant = max(found, key=lambda t: t.id)
        tenant_id, key = tenant.id, (await tenants.create_api_key(db, tenant))[1]
        print(f"reusing the data of tenant {tenant.name} (no fill)")
    else:
        tenant_id, key = await fill(db, n)
        print(f"fill: {n:,} deliveries, {3 * n:,} events in {time.perf_counter() - t0:.1f} s")
    config = Config.model_validate({"data_dir": tempfile.mkdtemp(), "tracking": {"secret": SECRET}})
    app = create_app(config, db)
    headers = {"Authorization": f"Bearer {key}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for name, path in (
            ("overview", "/api/v1/stats/overview"),
            (
                "overview from/to",
                RANGE,
            ),
            ("campaign", "/api/v1/campaigns/campaign-3"),
            ("campaign list", "/api/v1/campaigns?limit=20"),
        ):
            await client.get(path, headers=headers)  # warm: key verification cached
            samples = []
            cpu = time.process_time()
            for _ in range(requests):
                started = time.perf_counter()
                r = await client.get(path, headers=headers)
                samples.append((time.perf_counter() - started) * 1000)
                assert r.status_code == 200, r.text
            cpu_ms = (time.process_time() - cpu) * 1000 / requests
            p50, p99 = percentiles(samples)
            print(
                f"{name:18s} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  CPU {cpu_ms:5.2f} ms/request"
                f"  ({requests} requests, load average {os.getloadavg()[0]:.2f})"
            )
        overview = (await client.get("/api/v1/stats/overview", headers=headers)).json()
    await check_totals(db, tenant_id, overview)
    await explain(db, tenant_id)
    await db.dispose()


async def check_totals(db: Database, tenant_id: int, overview: dict[str, Any]) -> None:
    """The overview (from roll-ups) against counts of the stored rows: the ground truth."""
    async with db.read() as conn:
        sent = (
            await conn.execute(
                select(func.count())
                .select_from(deliveries)
                .where(deliveries.c.tenant_id == tenant_id)
            )
        ).scalar_one()
        by_type = dict(
            (
                await conn.execute(
                    select(recipient_events.c.type, func.count())
                    .where(recipient_events.c.tenant_id == tenant_id)
                    .group_by(recipient_events.c.type)
                )
            ).all()
        )
    truth = (sent, by_type.get("delivered"), by_type.get("opened"), by_type.get("clicked"))
    got = (overview["sent"], overview["delivered"], overview["opens"]["total"])
    got += (overview["clicks"]["total"],)
    verdict = "match" if truth == got else "MISMATCH"
    print(f"check: overview sent/delivered/opens/clicks {got} vs stored rows {truth}: {verdict}")
    if truth != got:
        raise SystemExit(1)


async def explain(db: Database, tenant_id: int) -> None:
    """The plans of the stats queries: index lookups on stat_counters, never the big tables."""
    async with db.read() as conn:
        found = await conn.execute(
            select(func.count())
            .select_from(stat_counters)
            .where(stat_counters.c.tenant_id == tenant_id)
        )
        print(f"stat_counters rows for the tenant: {found.scalar_one():,}")
        camp = (
            await conn.execute(
                select(campaigns.c.id).where(
                    campaigns.c.tenant_id == tenant_id, campaigns.c.name == "campaign-3"
                )
            )
        ).scalar_one()
        sqlite = conn.dialect.name == "sqlite"
        for name, query in (
            ("overview", stats.totals_query(tenant_id)),
            ("overview from/to", stats.totals_query(tenant_id, START, START + timedelta(days=4))),
            ("campaign", stats.by_campaign_query([camp])),
        ):
            compiled = query.compile(
                dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
            )
            params = tuple(
                str(v) if isinstance(v, datetime) else v
                for v in (compiled.params[k] for k in compiled.positiontup or ())
            )
            prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            plan = await conn.exec_driver_sql(prefix + compiled.string, params)
            print(f"plan {name}:")
            for row in plan:
                print("   ", " | ".join(str(v) for v in row))


async def _pixel_deliveries(url: str, n: int) -> list[int]:
    """n delivered deliveries in the server's database, so each open is a real event."""
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        tenant = await tenants.add_tenant(db, f"pixel-{random.randrange(10**9)}")
        async with db.write() as conn:
            r = await conn.execute(
                messages.insert().values(
                    tenant_id=tenant.id, size=1000, raw=None, options={}, received_at=START
                )
            )
            msg_id = int(r.inserted_primary_key[0])  # type: ignore[index]
            await conn.execute(
                deliveries.insert(),
                [
                    {
                        "message_id": msg_id,
                        "tenant_id": tenant.id,
                        "recipient": f"p{i}@example.com",
                        "recipient_key": f"p{i}@example.com",
                        "domain": "example.com",
                        "state": "delivered",
                        "attempts": 1,
                        "next_attempt_at": START,
                        "created_at": START,
                        "updated_at": START,
                        "final_at": START,
                    }
                    for i in range(n)
                ],
            )
            rows = await conn.execute(
                select(deliveries.c.id).where(deliveries.c.message_id == msg_id)
            )
            return [int(i) for (i,) in rows]
    finally:
        await db.dispose()


async def _count_events(url: str) -> int:
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        async with db.read() as conn:
            found = await conn.execute(select(func.count()).select_from(recipient_events))
            return int(found.scalar_one())
    finally:
        await db.dispose()


def _wait_healthy(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the server did not come up")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(port: int, script: Path, seconds: int, connections: int, threads: int, pid: int) -> str:
    load = os.getloadavg()[0]
    cpu = _cpu_s(pid)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = _cpu_s(pid) - cpu
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    per_request = f"{cpu / int(total.group(1)) * 1e6:.0f}" if total else "?"
    return (
        f"{rps.group(1) if rps else '?'} req/s, p50 {p50.group(1) if p50 else '?'}, "
        f"p99 {p99.group(1) if p99 else '?'}, {total.group(1) if total else '?'} requests"
        f"{', ' + errors.group(0) if errors else ''}, server CPU {per_request} µs/request"
        f" (load average before: {load:.2f})"
    )


AGENT = "Mozilla/5.0 (Windows NT 10.0) Thunderbird/115.0"


def _h2load(
    port: int, paths: Path, seconds: int, connections: int, rate: int, pid: int, log: Path
) -> str:
    """`rate` requests/s offered over `connections` HTTP/1.1 connections (each sends at
    rate/connections per second) for `seconds`; percentiles from h2load's per-request log
    (time from sending a request to the end of its response)."""
    if rate % connections:
        raise SystemExit(f"--rate {rate} must be a multiple of --connections {connections}")
    per_connection = rate // connections
    period_ms = 1000 / per_connection
    load = os.getloadavg()
    cpu = _cpu_s(pid)
    log.unlink(missing_ok=True)
    subprocess.run(
        [
            "h2load",
            "--h1",
            "-t1",
            f"-c{connections}",
            f"--rps={per_connection}",
            f"-n{rate * seconds}",
            # Connections opened evenly over one send period, so their fixed-rate timers are
            # out of phase: a smooth `rate`, not a burst of `connections` requests at once.
            f"--rate={math.ceil(connections / period_ms)}",
            "--rate-period=1ms",
            f"-i{paths}",
            f"--base-uri=http://127.0.0.1:{port}",
            f"--header=User-Agent: {AGENT}",
            f"--log-file={log}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = _cpu_s(pid) - cpu
    after = os.getloadavg()
    rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    if not rows:
        return "no requests completed"
    elapsed_ms = sorted(int(r[2]) / 1000 for r in rows)
    starts = [int(r[0]) for r in rows]
    span_s = (max(starts) - min(starts)) / 1e6 or 1.0
    bad = sum(1 for r in rows if r[1] != "200")

    def pct(q: float) -> float:
        return elapsed_ms[min(len(elapsed_ms) - 1, int(q * len(elapsed_ms)))]

    return (
        f"offered {rate:,} req/s, sent {len(rows) / span_s:,.0f} req/s ({len(rows):,} requests"
        f"{f', {bad} not 200' if bad else ''}), p50 {pct(0.50):.2f} ms, p90 {pct(0.90):.2f} ms,"
        f" p99 {pct(0.99):.2f} ms, p99.9 {pct(0.999):.2f} ms, max {elapsed_ms[-1]:.1f} ms,"
        f" server CPU {cpu / len(rows) * 1e6:.0f} µs/request"
        f" (load average 1/5/15 min before: {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f},"
        f" after: {after[0]:.2f})"
    )


def _port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def bench_pixel(
    seconds: int, connections: int, threads: int, runs: int, baseline: bool, rate: int = 0
) -> None:
    """relay's web role (and, with --baseline, a bare ASGI app on the same uvicorn setup)
    under wrk (or h2load at a fixed `rate`), `runs` times each, alternating; opens rotate
    over 1,000 real deliveries."""
    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite+aiosqlite:///{tmp / 'pixel.db'}"
    port = _port()
    env = {
        **os.environ,
        "RELAY_DATABASE__URL": url,
        "RELAY_TRACKING__SECRET": SECRET,
        "RELAY_HTTP__LISTEN": f"127.0.0.1:{port}",
        "RELAY_DATA_DIR": str(tmp),
        "RELAY_DATABASE__AUTO_MIGRATE": "true",
    }
    server = subprocess.Popen([sys.executable, "-m", "bench.web_bench", "serve"], env=env)
    bare_port = _port()
    bare = None
    if baseline:
        bare = subprocess.Popen(
            [sys.executable, "-m", "bench.web_bench", "serve-bare", str(bare_port)], env=env
        )
    try:
        _wait_healthy(port)
        if bare:
            _wait_healthy(bare_port)
        keyring = Keyring(SECRET.encode())
        ids = asyncio.run(_pixel_deliveries(url, 1000))
        tokens = [keyring.sign(TokenData(TokenKind.OPEN, i)) for i in ids]
        script = tmp / "pixel.lua"
        script.write_text(
            "tokens = {" + ",".join(f'"{t}"' for t in tokens) + "}\n"
            "i = 0\n"
            "request = function()\n"
            "  i = i % #tokens + 1\n"
            '  return wrk.format("GET", "/track/open/" .. tokens[i], '
            '{["User-Agent"] = "' + AGENT + '"})\n'
            "end\n"
        )
        paths = tmp / "paths.txt"
        paths.write_text("".join(f"/track/open/{t}\n" for t in tokens))
        log = tmp / "h2load.tsv"
        for run in range(1, runs + 1):
            if rate:
                relay_run = _h2load(port, paths, seconds, connections, rate, server.pid, log)
                print(f"run {run} relay: {relay_run}")
                if bare:
                    bare_run = _h2load(bare_port, paths, seconds, connections, rate, bare.pid, log)
                    print(f"run {run} bare:  {bare_run}")
                continue
            print(
                f"run {run} relay: {_wrk(port, script, seconds, connections, threads, server.pid)}"
            )
            if bare:
                bare_run = _wrk(bare_port, script, seconds, connections, threads, bare.pid)
                print(f"run {run} bare:  {bare_run}")
    finally:
        for proc in (server, bare):
            if proc is not None:
                proc.terminate()
                proc.wait(60)
    print(f"open events stored after shutdown flush: {asyncio.run(_count_events(url)):,}")


async def _bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor: an ASGI app that only answers the GIF, no events, no framework."""
    if scope["type"] != "http":
        return
    await send(PIXEL_START)
    await send({"type": "http.response.body", "body": GIF})


def serve_bare(port: int) -> None:
    import uvloop

    uvloop.run(_serve_bare(port))


async def _serve_bare(port: int) -> None:
    server = uvicorn.Server(
        uvicorn.Config(
            _bare,
            host="127.0.0.1",
            port=port,
            loop="none",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
        )
    )
    import signal

    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGTERM, lambda: setattr(server, "should_exit", True)
    )
    lags: list[float] = []
    probe = asyncio.create_task(_loop_lag(lags))
    await server.serve()  # until SIGTERM
    probe.cancel()
    _print_lag("bare", lags)


async def serve() -> None:
    """The web role as `relay serve --role web` runs it (child process for `pixel`)."""
    import uvloop

    from relay.config import load
    from relay.service import prepare_database
    from relay.web.app import run

    del uvloop
    config = load(None, os.environ)
    db = await prepare_database(config)
    stopping = asyncio.Event()
    import signal

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    lags: list[float] = []
    probe = asyncio.create_task(_loop_lag(lags))
    try:
        await run(config, db, stopping)
    finally:
        probe.cancel()
        await db.dispose()
    _print_lag("relay", lags)


def _print_lag(name: str, lags: list[float]) -> None:
    if lags:
        p50, p99 = percentiles(lags)
        print(
            f"{name} event-loop lag (5 ms sleeps, whole run): p50 {p50:.1f} ms, p99 {p99:.1f} ms,"
            f" max {max(lags):.1f} ms over {len(lags):,} samples"
        )


async def _loop_lag(lags: list[float]) -> None:
    """How late a 5 ms sleep wakes: what a request waits behind other work on the loop."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append((time.perf_counter() - started - 0.005) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(prog="web_bench")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stats")
    s.add_argument("--url", default="sqlite+aiosqlite:///var/bench-web.db")
    s.add_argument("-n", "--deliveries", type=int, default=1_000_000)
    s.add_argument("--requests", type=int, default=300)
    s.add_argument("--reuse", action="store_true", help="time the last fill's tenant again")
    p = sub.add_parser("pixel")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--baseline", action="store_true", help="also load a bare ASGI app")
    p.add_argument(
        "--rate",
        type=int,
        default=0,
        help="offer this many requests/s (h2load --rps) instead of saturating with wrk",
    )
    sub.add_parser("serve")
    b = sub.add_parser("serve-bare")
    b.add_argument("port", type=int)
    args = parser.parse_args()
    if args.cmd == "stats":
        asyncio.run(bench_stats(args.url, args.deliveries, args.requests, args.reuse))
    elif args.cmd == "pixel":
        bench_pixel(
            args.seconds, args.connections, args.threads, args.runs, args.baseline, args.rate
        )
    elif args.cmd == "serve-bare":
        serve_bare(args.port)
    else:
        import uvloop

        uvloop.run(serve())


if __name__ == "__main__":
    main()
