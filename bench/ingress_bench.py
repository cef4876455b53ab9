"""Ingress acceptance benchmark: messages/s that `relay serve --role smtp` answers 250 to.

Input: command-line grid (sizes, sessions, recipients, databases, message count). Output: one
line per case (JSON with --json) with msgs/s and the relay process's peak RSS. Side effects:
starts relay in a subprocess on a temporary SQLite file or a fresh MariaDB database; the
client is Postfix's `smtp-source`, allowed in through smtp.trusted_networks (it cannot AUTH).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
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


def relay_pid(pid: int) -> int:
    """The relay process: `pid` itself, or its child when py-spy started it."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return int(kids[0]) if kids else pid


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


# `relay serve` started with uvloop as the event loop (the bench's choice, not relay's).
UVLOOP_MAIN = (
    "import asyncio, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "from relay.cli import main; sys.exit(main(sys.argv[1:]))"
)


def run_case(
    database: str,
    size: int,
    sessions: int,
    rcpts: int,
    count: int,
    uvloop: bool = False,
    profile: str = "",
    rate: int = 100,
    log_level: str = "warning",
) -> dict[str, object]:
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
        RELAY_LOG__LEVEL=log_level,
    )
    command = [sys.executable, "-c", UVLOOP_MAIN] if uvloop else [sys.executable, "-m", "relay"]
    command += ["serve", "--role", "smtp"]
    if profile:
        out = str(Path(profile).resolve())
        venv_spy = Path(sys.executable).parent / "py-spy"  # installed by .[bench]
        spy = str(venv_spy) if venv_spy.exists() else "py-spy"
        command = [spy, "record", "-r", str(rate), "-o", out, "-f", "raw", "--", *command]
    proc = subprocess.Popen(
        command,
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
        relay = relay_pid(proc.pid)
        cpu_before = cpu_s(relay)
        started = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, timeout=600)
        elapsed = time.perf_counter() - started
        cpu = cpu_s(relay) - cpu_before
        rss = peak_rss_kb(relay)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(relay_pid(proc.pid), signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
        if dropped:
            drop_mysql(dropped)
    return {
        "database": database, "size": size, "sessions": sessions, "recipients": rcpts,
        "messages": count, "seconds": round(elapsed, 3), "msgs_per_s": round(count / elapsed, 1),
        "relay_cpu_ms_per_msg": round(1000 * cpu / count, 2),
        "peak_rss_mb": round(rss / 1024, 1), "uvloop": uvloop, "log_level": log_level,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,mysql")
    parser.add_argument("--sizes", default="5000,50000", help="message sizes in bytes")
    parser.add_argument("--sessions", default="1,10,50")
    parser.add_argument("--recipients", default="1,10")
    parser.add_argument("--count", type=int, default=2000, help="messages per case")
    parser.add_argument("--uvloop", action="store_true", help="run relay on uvloop")
    parser.add_argument("--py-spy", default="", help="record a py-spy profile to this file")
    parser.add_argument("--py-spy-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument(
        "--log-level", default="warning", help="relay's log.level (info: one line per message)"
    )
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
        result = run_case(
            database, size, sessions, rcpts, args.count, args.uvloop, args.py_spy,
            args.py_spy_rate, args.log_level,
        )
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(
                f"{database:6} {size:>6} B  {sessions:>2} sessions  {rcpts:>2} rcpt  "
                f"{result['msgs_per_s']:>7} msg/s  "
                f"relay CPU {result['relay_cpu_ms_per_msg']} ms/msg  "
                f"peak RSS {result['peak_rss_mb']} MB",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
