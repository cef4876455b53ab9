"""A real `relay serve` process for tests: config file, ports, JSON log lines, raw SMTP.

The process runs with the test's database URL, SMTP and HTTP on free loopback ports, and
delivers through a smarthost (a RecordingServer). Its stdout (JSON log lines) goes to a
file that tests read back.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from relay.config import DatabaseConfig
from relay.store.db import Database
from relay.store.tenants import add_credential, add_tenant
from tests.peers import free_port

ACCOUNT_PASSWORD = "AcctSecret-9c1e77"  # in the config; must never reach a log line


def write_config(
    tmp_path: Path,
    db_url: str,
    smarthost_port: int,
    smtp: str = "",
    log_level: str = "debug",
    keep_ports_of: Path | None = None,
    service: str = "",
    drain_timeout: str = "15s",
) -> Path:
    """The config file; `smtp` adds lines to [smtp]; `keep_ports_of` rewrites in place."""
    smtp_port, http_port = ports(keep_ports_of) if keep_ports_of else (free_port(), free_port())
    if "hostname" not in smtp:
        smtp = f'hostname = "relay.test"\n{smtp}'
    path = tmp_path / "relay.toml"
    path.write_text(
        f'data_dir = "{tmp_path}/var"\n'
        f'[log]\nlevel = "{log_level}"\nformat = "json"\n'
        f'[service]\ndrain_timeout = "{drain_timeout}"\n{service}\n'
        f'[smtp]\nlisten = ["127.0.0.1:{smtp_port}"]\n{smtp}\n'
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n'
        f'public_url = "http://127.0.0.1:{http_port}"\nevent_flush_interval = "1h"\n'
        f'[database]\nurl = "{db_url}"\n'
        f'[tracking]\nsecret = "test-tracking-secret-0123456789"\n'
        f'[delivery]\nmode = "smarthost"\nretry_schedule = ["1s"]\n'
        f'[[delivery.accounts]]\nname = "up"\nhost = "127.0.0.1"\nport = {smarthost_port}\n'
        f'tls = "none"\npassword = "{ACCOUNT_PASSWORD}"\n'
    )
    return path


def ports(config: Path) -> tuple[int, int]:
    text = config.read_text()
    smtp = int(text.split('listen = ["127.0.0.1:')[1].split('"')[0])
    http = int(text.split('listen = "127.0.0.1:')[1].split('"')[0])
    return smtp, http


class Served:
    """`relay serve` as a child process; `logs()` parses what it printed so far."""

    def __init__(
        self, config: Path, cwd: Path, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.config = config
        self.smtp_port, self.http_port = ports(config)
        self.log_path = cwd / f"serve-{time.monotonic_ns()}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        full_env.update(env or {})
        self._out = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "-c", str(config), "serve", *args],
            cwd=cwd,
            env=full_env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    async def ready(self, timeout_s: float = 30) -> None:
        """Wait until /healthz answers and the SMTP port accepts connections."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as client:
            while True:
                assert self.proc.poll() is None, self.text()
                try:
                    r = await client.get(f"http://127.0.0.1:{self.http_port}/healthz")
                    _, writer = await asyncio.open_connection("127.0.0.1", self.smtp_port)
                    writer.close()
                    if r.status_code == 200:
                        return
                except (OSError, httpx.TransportError):
                    pass
                assert time.monotonic() < deadline, self.text()
                await asyncio.sleep(0.1)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    async def wait(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, "relay serve did not exit in time"
            await asyncio.sleep(0.05)
        self._out.close()
        return self.proc.returncode

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == name]

    async def wait_for_event(self, name: str, timeout_s: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while not (found := self.events(name)):
            assert time.monotonic() < deadline, f"no {name} in:\n{self.text()}"
            await asyncio.sleep(0.05)
        return found[-1]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


async def tenant_with_login(db_url: str) -> tuple[str, str]:
    """A tenant 'shop' (shop.example) and one SMTP login; returns (username, password)."""
    db = Database.from_config(DatabaseConfig(url=db_url))
    try:
        tenant = await add_tenant(db, "shop", sender_domains=["shop.example"])
        credential, password = await add_credential(db, tenant)
    finally:
        await db.dispose()
    return credential.username, password


class SmtpClient:
    """A line-level SMTP client, so a test can stop in the middle of DATA."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> tuple[SmtpClient, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        return client, await client.reply()

    async def reply(self) -> str:
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 20)).decode()
            lines.append(line.rstrip("\r\n"))
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    async def command(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def login(self, username: str, password: str) -> str:
        await self.command("EHLO client.test")
        blob = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        return await self.command(f"AUTH PLAIN {blob}")

    async def begin(self, rcpts: list[str]) -> None:
        assert (await self.command("MAIL FROM:<app@shop.example>")).startswith("250")
        for rcpt in rcpts:
            assert (await self.command(f"RCPT TO:<{rcpt}>")).startswith("250")
        assert (await self.command("DATA")).startswith("354")

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()


def html_message(rcpt: str, marker: str) -> bytes:
    return (
        "From: App <app@shop.example>\r\n"
        f"To: <{rcpt}>\r\n"
        "Subject: graceful\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "\r\n"
        f'<html><body><p>{marker}</p><a href="https://example.org/x">x</a></body></html>\r\n'
    ).encode()
