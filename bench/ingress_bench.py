"""Ingress acceptance benchmark: messages/s that `relay serve --role smtp` answers 250 to.

Input: command-line grid (sizes, sessions, recipients, databases, message count). Output: one
line per case (JSON with --json) with msgs/s and the relay process's peak RSS. Side effects:
starts relay in a subprocess on a temporary SQLite file or a fresh MariaDB database; the
client is Postfix's `smtp-source`, allowed in through smtp.trusted_networks (it cannot AUTH).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

MYSQL_URL = os.environ.get("RELAY_BENCH_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def prepare(url: str) -> None:
    from relay.config import DatabaseConfig
    from relay.store.db import Database, upgrade
    from relay.store.tenants import add_tenant

    db = Database.from_config(DatabaseConfig(url=url))
    try:
        await upgrade(db.engine)
        await add_tenant(db, "bench")
    finally:
        await db.dispose()


def mysql_database() -> tuple[str, str]:
    import pymysql

    name = f"relay_bench_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    conn.close()
    return MYSQL_URL.rstrip("/") + "/" + name, name


def drop_mysql(name: str) -> None:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


def run_case(database: str, size: int, sessions: int, rcpts: int, count: int) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    dropped = ""
    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / 'relay.db'}"
    else:
        url, dropped = mysql_database()
    asyncio.run(prepare(url))
    port = free_port()
    env = dict(
        os.environ,
        RELAY_DATABASE__URL=url,
        RELAY_SMTP__LISTEN=f'["127.0.0.1:{port}"]',
        RELAY_SMTP__TRUSTED_NETWORKS='["127.0.0.0/8"]',
        RELAY_SMTP__TRUSTED_TENANT="bench",
        RELAY_SMTP__MAX_CONNECTIONS_PER_IP="1000",
        RELAY_LOG__LEVEL="warning",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--role", "smtp"],
        env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("relay did not start") from None
                time.sleep(0.1)
        args = [
            "smtp-source", "-s", str(sessions), "-m", str(count), "-l", str(size),
            "-r", str(rcpts), "-f", "bench@bench.example", "-t", "rcpt@example.org",
            f"127.0.0.1:{port}",
        ]
        started = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, timeout=600)
        elapsed = time.perf_counter() - started
        rss = peak_rss_kb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
        if dropped:
            drop_mysql(dropped)
    return {
        "database": database, "size": size, "sessions": sessions, "recipients": rcpts,
        "messages": count, "seconds": round(elapsed, 3), "msgs_per_s": round(count / elapsed, 1),
        "peak_rss_mb": round(rss / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,mysql")
    parser.add_argument("--sizes", default="5000,50000", help="message sizes in bytes")
    parser.add_argument("--sessions", default="1,10,50")
    parser.add_argument("--recipients", default="1,10")
    parser.add_argument("--count", type=int, default=2000, help="messages per case")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("smtp-source") is None:
        print("ingress_bench: smtp-source (Postfix) is required", file=sys.stderr)
        return 2
    grid = itertools.product(
        args.databases.split(","),
        [int(x) for x in args.sizes.split(",")],
        [int(x) for x in args.sessions.split(",")],
        [int(x) for x in args.recipients.split(",")],
    )
    for database, size, sessions, rcpts in grid:
        result = run_case(database, size, sessions, rcpts, args.count)
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(
                f"{database:6} {size:>6} B  {sessions:>2} sessions  {rcpts:>2} rcpt  "
                f"{result['msgs_per_s']:>7} msg/s  peak RSS {result['peak_rss_mb']} MB",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
