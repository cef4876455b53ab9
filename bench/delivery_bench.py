"""Delivery benchmark: drain N queued 5 KB deliveries into a local SMTP sink; report msgs/s.

Input: --count, --processes, --db (a SQLAlchemy URL; default a fresh SQLite file), --sink
(smtp-sink from Postfix when installed, else an aiosmtpd sink). Output: one line of numbers
(time to drain, msgs/s, peak RSS) and a JSON file in bench/results/. Side effects: creates
and deletes its own SQLite file (or empties the MariaDB tables it is pointed at).

    .venv/bin/python bench/delivery_bench.py --count 2000
    .venv/bin/python bench/delivery_bench.py --count 10000 --processes 2 \
        --db mysql+aiomysql://root@127.0.0.1/relay_bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import delete, insert  # noqa: E402

from relay.config import AccountConfig, Config, DatabaseConfig, DeliveryConfig  # noqa: E402
from relay.scheduler import Scheduler, build_transport  # noqa: E402
from relay.store import deliveries as queue  # noqa: E402
from relay.store.db import Database, upgrade, utcnow  # noqa: E402
from relay.store.tables import deliveries as deliveries_table  # noqa: E402
from relay.store.tables import messages, metadata, tenants  # noqa: E402

SMTP_SINK = "/usr/sbin/smtp-sink"


def body(size: int) -> bytes:
    head = b"From: Bench <bench@shop.example>\r\nTo: x@example.com\r\nSubject: bench\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    return head + line * ((size - len(head)) // len(line) + 1)


async def fill(url: str, count: int, size: int) -> None:
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        await upgrade(db.engine)
        async with db.write() as conn:
            for table in reversed(metadata.sorted_tables):
                await conn.execute(delete(table))
        now = utcnow()
        async with db.write() as conn:
            t = await conn.execute(
                insert(tenants).values(
                    name="bench", sender_domains=[], settings={}, hold=False, created_at=now
                )
            )
            tenant = t.inserted_primary_key[0]  # type: ignore[index]
            raw = body(size)
            m = await conn.execute(
                insert(messages).values(
                    tenant_id=tenant,
                    mail_from="bench@shop.example",
                    size=len(raw),
                    raw=raw,
                    options={},
                    received_at=now,
                )
            )
            message = m.inserted_primary_key[0]  # type: ignore[index]
            rows = [
                {
                    "message_id": message,
                    "tenant_id": tenant,
                    "recipient": f"r{i}@example.com",
                    "recipient_key": f"r{i}@example.com",
                    "domain": "example.com",
                    "state": "queued",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(count)
            ]
            for start in range(0, count, 2000):
                await conn.execute(insert(deliveries_table), rows[start : start + 2000])
    finally:
        await db.dispose()


def start_sink(port: int) -> subprocess.Popen[bytes] | None:
    if not os.path.exists(SMTP_SINK):
        return None
    return subprocess.Popen(
        [SMTP_SINK, "-u", "root", f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def drain_in_process(config: Config, count: int) -> None:
    db = Database.from_config(config.database)
    try:
        scheduler = Scheduler(config, db, build_transport(config))
        await scheduler.run_until_idle()
        await scheduler.transport.close()
    finally:
        await db.dispose()


async def drain_processes(config_path: Path, url: str, count: int, processes: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    procs = [
        subprocess.Popen(  # noqa: ASYNC220 - started once, before timing matters
            [sys.executable, "-m", "relay", "-c", str(config_path), "serve", "--role", "delivery"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        while (await queue.state_counts(db)).get("delivered", 0) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    finally:
        await db.dispose()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)


def main() -> None:
    from relay import log

    log.setup(level="warning")  # one console line per delivery would dominate the timing
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--size", type=int, default=5000)
    ap.add_argument("--processes", type=int, default=0, help="0 = one scheduler in this process")
    ap.add_argument("--workers", type=int, default=50)
    ap.add_argument("--db", default="")
    ap.add_argument("--port", type=int, default=42525)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    url = args.db or f"sqlite+aiosqlite:///{tmp}/bench.db"
    sink = start_sink(args.port)
    if sink is None:
        sys.exit(f"{SMTP_SINK} not found: install postfix (it provides smtp-sink)")
    try:
        time.sleep(0.3)
        asyncio.run(fill(url, args.count, args.size))
        account = AccountConfig(name="sink", host="127.0.0.1", port=args.port, tls="none")
        delivery = DeliveryConfig(
            mode="smarthost", accounts=[account], workers=args.workers, batch_size=200
        )
        config = Config(database=DatabaseConfig(url=url), delivery=delivery)
        started = time.monotonic()
        if args.processes:
            path = tmp / "relay.toml"
            path.write_text(
                f'[database]\nurl = "{url}"\n'
                f'[delivery]\nmode = "smarthost"\nworkers = {args.workers}\n'
                f'[[delivery.accounts]]\nname = "sink"\nhost = "127.0.0.1"\n'
                f'port = {args.port}\ntls = "none"\n'
            )
            asyncio.run(drain_processes(path, url, args.count, args.processes))
        else:
            asyncio.run(drain_in_process(config, args.count))
        elapsed = time.monotonic() - started
    finally:
        sink.terminate()
        sink.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    rss_mb = (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1024
    )
    result = {
        "bench": "delivery",
        "count": args.count,
        "size": args.size,
        "processes": args.processes or 1,
        "database": url.split(":")[0],
        "seconds": round(elapsed, 2),
        "msgs_per_s": round(args.count / elapsed, 1),
        "peak_rss_mb": round(rss_mb, 1),
        "tracking": False,
        "dkim": False,
    }
    print(json.dumps(result))
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"delivery-{int(time.time())}.json").write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
