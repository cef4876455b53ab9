"""Operations benchmark: the event loop's effect on acceptance, and how long a drain takes.

1. `loop`: messages/s that `relay serve --role smtp --loop L` answers 250 to (smtp-source,
   SQLite, 5 KB, 1 recipient), for L in uvloop and asyncio, alternating, several runs each.
2. `drain`: `relay serve` (all roles) with N idle SMTP sessions open: time from SIGTERM to
   exit 0 (idle sessions are closed at once; nothing in DATA).

Bounded in count and time; starts everything it needs on loopback and stops it.

    .venv/bin/python -m bench.ops_bench loop --count 500 --runs 3
    .venv/bin/python -m bench.ops_bench drain --sessions 200 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ingress_bench import free_port, prepare


def _start(tmp: Path, url: str, port: int, *args: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        RELAY_DATABASE__URL=url,
        RELAY_SMTP__LISTEN=f'["127.0.0.1:{port}"]',
        RELAY_HTTP__LISTEN=f"127.0.0.1:{free_port()}",
        RELAY_SMTP__TRUSTED_NETWORKS='["127.0.0.0/8"]',
        RELAY_SMTP__TRUSTED_TENANT="bench",
        RELAY_SMTP__MAX_CONNECTIONS_PER_IP="1000",
        RELAY_LOG__LEVEL="warning",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", *args],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.recv(512)  # the banner: a polite probe, not a half-open connection
                sock.sendall(b"QUIT\r\n")
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("relay did not start") from None
            time.sleep(0.1)


def loop_case(loop: str, count: int, sessions: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="relay-opsbench-"))
    url = f"sqlite+aiosqlite:///{tmp / 'relay.db'}"
    asyncio.run(prepare(url))
    port = free_port()
    proc = _start(tmp, url, port, "--role", "smtp", "--loop", loop)
    try:
        args = [
            "smtp-source", "-s", str(sessions), "-m", str(count), "-l", "5000",
            "-f", "bench@bench.example", "-t", "rcpt@example.org", f"127.0.0.1:{port}",
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, timeout=300)
        return count / (time.perf_counter() - started)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


def drain_case(idle: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="relay-opsbench-"))
    url = f"sqlite+aiosqlite:///{tmp / 'relay.db'}"
    asyncio.run(prepare(url))
    port = free_port()
    proc = _start(tmp, url, port)
    socks = []
    try:
        for _ in range(idle):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.recv(512)
            socks.append(sock)
        started = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        elapsed = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"relay exited {code}")
        return elapsed
    finally:
        for sock in socks:
            sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("loop")
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--sessions", type=int, default=10)
    p.add_argument("--runs", type=int, default=3)
    d = sub.add_parser("drain")
    d.add_argument("--sessions", type=int, default=200)
    d.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, object]
    if args.what == "loop":
        rates: dict[str, list[float]] = {"uvloop": [], "asyncio": []}
        for _ in range(args.runs):
            for loop in rates:  # alternate, so machine load hits both alike
                rates[loop].append(round(loop_case(loop, args.count, args.sessions), 1))
        result = {
            "count": args.count,
            "sessions": args.sessions,
            "msgs_per_s": rates,
            "median": {k: statistics.median(v) for k, v in rates.items()},
        }
    else:
        times = [round(drain_case(args.sessions), 3) for _ in range(args.runs)]
        result = {"idle_sessions": args.sessions, "sigterm_to_exit_s": times,
                  "median": statistics.median(times)}  # fmt: skip
    print(json.dumps(result))
    out = Path(__file__).parent / "results" / f"ops-{args.what}-{int(time.time())}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
