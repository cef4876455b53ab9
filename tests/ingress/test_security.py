"""STARTTLS, the AUTH-needs-TLS rule, AUTH failure throttling, database trouble → 451."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import secrets
import shutil
import socket
import sqlite3
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import trustme
from sqlalchemy import select

from relay.config import DatabaseConfig
from relay.ingress import replies, server
from relay.ingress.auth import AuthThrottle
from relay.store.db import Database
from relay.store.tables import messages
from tests.conftest import IN_CI
from tests.ingress.conftest import start_ingress

RAW = b"Subject: x\r\n\r\ny\r\n"


def _outgoing_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing address
            ip = str(s.getsockname()[0])
        except OSError:
            return None
    return None if ipaddress.ip_address(ip).is_loopback else ip


@pytest.fixture
def non_loopback_ip() -> Iterator[str]:
    """An address of this machine outside 127/8 (the ingress exempts only loopback
    addresses from the AUTH-needs-TLS rule): the outgoing one, or, on a machine without
    one, a TEST-NET-2 address added to `lo` for the test (needs root and `ip`)."""
    ip = _outgoing_ip()
    if ip is not None:
        yield ip
        return
    added = _add_address()
    try:
        yield added
    finally:
        subprocess.run(["ip", "addr", "del", f"{added}/32", "dev", "lo"], check=False)


def _add_address() -> str:
    problem = "no non-loopback address, and not root with `ip` to add one"
    if os.geteuid() == 0 and shutil.which("ip"):
        for _ in range(5):  # another test run may hold one of them
            ip = f"198.51.100.{secrets.randbelow(254) + 1}"
            done = subprocess.run(
                ["ip", "addr", "add", f"{ip}/32", "dev", "lo"], capture_output=True, text=True
            )
            if done.returncode == 0:
                return ip
            problem = f"`ip addr add {ip}/32 dev lo` failed: {done.stderr.strip()}"
    if IN_CI:
        pytest.fail(problem + " (CI=true: the AUTH-needs-TLS tests must run)")
    pytest.skip(problem)


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[str, str, trustme.CA]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    return str(cert_path), str(key_path), ca


async def test_starttls_then_auth_and_send(db: Database, tls_pair) -> None:  # type: ignore[no-untyped-def]
    cert, key, ca = tls_pair
    running, servers = await start_ingress(db, tls_cert=cert, tls_key=key)
    try:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=running.port,
            timeout=10,
            start_tls=False,
            tls_context=context,
        )
        await smtp.connect()
        await smtp.ehlo()
        assert smtp.supports_extension("starttls")
        await smtp.starttls()
        assert [s._tls_protocol is not None for s in running.shared.sessions] == [True]
        await smtp.login(running.credential.username, running.password)
        await smtp.sendmail("news@shop.example", ["ann@example.org"], b"Subject: t\r\n\r\nx\r\n")
        await smtp.quit()
        async with db.read() as conn:
            assert len((await conn.execute(select(messages))).all()) == 1
    finally:
        await server.stop(running.shared, servers, drain_s=1)


async def _auth_off_loopback(db: Database, ip: str, **smtp: Any) -> str:
    """The reply to AUTH PLAIN without TLS from `ip`, to a listener on `ip`."""
    running, servers = await start_ingress(db, listen=[f"{ip}:0"], **smtp)
    try:
        port = servers[0].sockets[0].getsockname()[1]
        smtp_client = aiosmtplib.SMTP(hostname=ip, port=port, timeout=10, start_tls=False)
        await smtp_client.connect()
        await smtp_client.ehlo()
        assert [s.peer_ip for s in running.shared.sessions] == [ip]  # not loopback
        blob = base64.b64encode(f"\0{running.credential.username}\0{running.password}".encode())
        code, text = await smtp_client.execute_command(b"AUTH", b"PLAIN " + blob)
        await smtp_client.quit()
        return f"{code} {text}"
    finally:
        await server.stop(running.shared, servers, drain_s=1)


async def test_auth_before_starttls_refused_off_loopback(
    db: Database, non_loopback_ip: str
) -> None:
    reply = await _auth_off_loopback(db, non_loopback_ip)
    assert reply == replies.AUTH_NEEDS_TLS


async def test_auth_without_tls_off_loopback_when_not_required(
    db: Database, non_loopback_ip: str
) -> None:
    reply = await _auth_off_loopback(db, non_loopback_ip, auth_require_tls=False)
    assert reply.startswith("235 "), reply


def test_throttle_slows_then_blocks_then_forgives() -> None:
    now = [1000.0]
    throttle = AuthThrottle(delay_after=2, block_after=3, block_s=60, clock=lambda: now[0])
    assert throttle.fail("192.0.2.1") == 0
    assert throttle.fail("192.0.2.1") > 0
    assert not throttle.blocked("192.0.2.1")
    throttle.fail("192.0.2.1")
    assert throttle.blocked("192.0.2.1") and not throttle.blocked("192.0.2.2")
    now[0] += 61
    assert not throttle.blocked("192.0.2.1")
    assert throttle.fail("192.0.2.1") == 0  # old failures forgiven


async def test_blocked_ip_gets_454(db: Database) -> None:
    running, servers = await start_ingress(
        db, auth_failures_before_delay=5, auth_failures_before_block=2
    )
    try:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=running.port, timeout=10, start_tls=False)
        await smtp.connect()
        for _ in range(2):
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                await smtp.login(running.credential.username, "nope")
        code, text = await smtp.execute_command(b"AUTH", b"PLAIN AGZvbwBiYXI=")
        assert f"{code} {text}" == replies.AUTH_BLOCKED
        await smtp.quit()
    finally:
        await server.stop(running.shared, servers, drain_s=1)


async def test_database_locked_gives_451_and_keeps_nothing(db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("a held write lock is how we make SQLite unavailable")
    db = Database.from_config(DatabaseConfig(url=db_url, busy_timeout=0.2))
    try:
        running, servers = await start_ingress(db)
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=running.port, timeout=10, start_tls=False)
        await smtp.connect()
        await smtp.login(running.credential.username, running.password)
        blocker = sqlite3.connect(db_url.split("///", 1)[1], isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(aiosmtplib.SMTPDataError) as e:
                await smtp.sendmail("news@shop.example", ["a@example.org"], RAW)
            assert f"{e.value.code} {e.value.message}" == replies.STORE_DOWN
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # Once the database is back, the same session delivers.
        await smtp.sendmail("news@shop.example", ["a@example.org"], RAW)
        await smtp.quit()
        async with db.read() as conn:
            assert len((await conn.execute(select(messages))).all()) == 1
        await server.stop(running.shared, servers, drain_s=1)
    finally:
        await db.dispose()


async def test_cli_self_signed_pair_serves_implicit_tls(db: Database, tmp_path: Path) -> None:
    from relay.cli import main
    from tests.peers import free_port

    out = str(tmp_path / "tls")
    argv = ["tls", "selfsigned", "--out", out, "--hostname", "127.0.0.1"]
    assert await asyncio.to_thread(main, argv) == 0
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    tls_port = free_port()
    running, servers = await start_ingress(
        db, tls_cert=str(cert), tls_key=str(key), tls_listen=[f"127.0.0.1:{tls_port}"]
    )
    try:
        context = ssl.create_default_context(cafile=str(cert))
        smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=tls_port, timeout=10, use_tls=True, tls_context=context
        )
        await smtp.connect()
        await smtp.login(running.credential.username, running.password)
        await smtp.sendmail("news@shop.example", ["ann@example.org"], RAW)
        await smtp.quit()
        async with db.read() as conn:
            assert len((await conn.execute(select(messages))).all()) == 1
    finally:
        await server.stop(running.shared, servers, drain_s=1)


async def test_trusted_network_sends_without_auth_as_its_tenant(db: Database) -> None:
    from relay.store.tenants import add_tenant

    await add_tenant(db, "legacy")
    running, servers = await start_ingress(
        db, trusted_networks=["127.0.0.0/8"], trusted_tenant="legacy"
    )
    try:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=running.port, timeout=10, start_tls=False)
        await smtp.connect()
        await smtp.sendmail("app@legacy.example", ["ann@example.org"], RAW)
        await smtp.quit()
        async with db.read() as conn:
            (msg,) = (await conn.execute(select(messages))).all()
        assert msg.tenant_id == running.shared.trusted_tenant.id  # type: ignore[union-attr]
        assert msg.credential_id is None
    finally:
        await server.stop(running.shared, servers, drain_s=1)


async def test_connection_limit_per_ip_and_shutdown_421(db: Database) -> None:
    running, servers = await start_ingress(db, max_connections_per_ip=1)
    try:
        first = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=running.port, timeout=10, start_tls=False
        )
        await first.connect()
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        line = await asyncio.wait_for(reader.readline(), 10)
        assert line.decode().strip() == replies.TOO_MANY_FROM_IP
        writer.close()
        await first.quit()
        running.shared.stopping = True
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        line = await asyncio.wait_for(reader.readline(), 10)
        assert line.decode().strip() == replies.SHUTTING_DOWN
        writer.close()
    finally:
        await server.stop(running.shared, servers, drain_s=1)
