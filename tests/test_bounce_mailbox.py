"""IMAP polling of a bounce mailbox against a real Dovecot on loopback (skipped without it)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from relay import config as config_module
from relay import service
from relay.bounce import parse
from relay.bounce_mailbox import MailboxError, poll_once, serve
from relay.config import BounceMailboxConfig, Config
from relay.errors import RelayError
from relay.render.tokens import TokenData, TokenKind, load_keyring
from relay.store import suppressions
from relay.store.db import Database
from relay.store.tables import deliveries, inbound_reports
from tests import rows

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DSN = (
    b"From: MAILER-DAEMON@mx.example.net\r\nTo: bounces@relay.example\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
    b"--B\r\nContent-Type: text/plain\r\n\r\nsorry\r\n"
    b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
    b"Final-Recipient: rfc822; gone@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n--B--\r\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _own(path: Path) -> None:
    """Hand the mail tree to the `dovecot` user: Dovecot never opens mail as root."""
    entry = pwd.getpwnam("dovecot")
    for p in [path, *path.rglob("*")]:
        os.chown(p, entry.pw_uid, entry.pw_gid)


@pytest.fixture
def imap() -> Iterator[tuple[int, Path]]:
    if not Path(DOVECOT).exists() or os.geteuid() != 0:
        pytest.skip("dovecot (Debian dovecot-imapd) is not installed, or not running as root")
    # Not pytest's tmp_path: its parents are 0700, and Dovecot's mail process is not root.
    tmp_path = Path(tempfile.mkdtemp(prefix="relay-imap-"))
    tmp_path.chmod(0o755)
    port = _free_port()
    home = tmp_path / "home" / "bounces"
    for sub in ("new", "cur", "tmp"):
        (home / "Maildir" / sub).mkdir(parents=True)
    _own(tmp_path / "home")
    (tmp_path / "passwd").write_text("bounces:{PLAIN}s3cret-pass::::::\n")
    conf = tmp_path / "dovecot.conf"
    conf.write_text(
        f"""protocols = imap
listen = 127.0.0.1
base_dir = {tmp_path}/run
state_dir = {tmp_path}/state
log_path = {tmp_path}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {tmp_path}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={tmp_path}/home/%u
}}
first_valid_uid = 1
first_valid_gid = 1
service auth {{
  user = root
}}
service auth-worker {{
  user = root
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
"""
    )
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"dovecot exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.05)  # waiting for a real server process to listen, not a test clock
    try:
        yield port, home / "Maildir"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(tmp_path, ignore_errors=True)


def _config(port: int, **values: object) -> BounceMailboxConfig:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "tls": "none",
        "user": "bounces",
        "password": "s3cret-pass",
        "timeout": 10.0,
    }
    base.update(values)
    return BounceMailboxConfig(**base)


async def test_poll_handles_and_flags(imap: tuple[int, Path]) -> None:
    port, maildir = imap
    (maildir / "new" / "1.host").write_bytes(DSN)
    (maildir / "new" / "2.host").write_bytes(DSN.replace(b"gone@", b"other@"))
    _own(maildir)
    seen: list[str] = []

    async def handle(raw: bytes) -> None:
        seen.append(parse(raw).results[0].recipient)

    assert await poll_once(_config(port), handle) == 2
    assert sorted(seen) == ["gone@example.net", "other@example.net"]
    assert await poll_once(_config(port), handle) == 0  # marked seen: not fetched again
    assert len(seen) == 2


async def test_failed_handling_stays_for_next_poll_and_move(imap: tuple[int, Path]) -> None:
    port, maildir = imap
    (maildir / "new" / "1.host").write_bytes(DSN)
    (maildir / ".Processed" / "cur").mkdir(parents=True)
    for sub in ("new", "tmp"):
        (maildir / ".Processed" / sub).mkdir()
    _own(maildir)

    async def broken(raw: bytes) -> None:
        raise RelayError("database unavailable")

    async def ok(raw: bytes) -> None:
        return None

    config = _config(port, move_to="Processed")
    assert await poll_once(config, broken) == 0
    assert await poll_once(config, ok) == 1
    assert await poll_once(config, ok) == 0
    moved = list((maildir / ".Processed" / "cur").iterdir()) + list(
        (maildir / ".Processed" / "new").iterdir()
    )
    assert len(moved) == 1


async def test_bad_login_is_a_clear_error(imap: tuple[int, Path]) -> None:
    port, _ = imap

    async def ok(raw: bytes) -> None:
        return None

    with pytest.raises(MailboxError) as e:
        await poll_once(_config(port, password="wrong-password"), ok)
    assert "wrong-password" not in str(e.value) and "127.0.0.1" in str(e.value)


def test_poller_rides_with_the_smtp_role_when_configured() -> None:
    configured = Config.model_validate({"bounce_mailbox": {"host": "imap.example"}})
    assert service.companion_roles(configured, ["smtp", "delivery"]) == ["bounce_mailbox"]
    assert service.companion_roles(configured, ["delivery"]) == []
    assert service.companion_roles(Config(), ["smtp", "web", "delivery"]) == []
    assert service.resolve_role("bounce_mailbox") is serve


async def test_serve_role_applies_mailbox_bounces(
    imap: tuple[int, Path], db: Database, tmp_path: Path
) -> None:
    port, maildir = imap
    config = config_module.load(
        None,
        env={
            "RELAY_DATA_DIR": str(tmp_path),
            "RELAY_BOUNCE__DOMAIN": "bounces.relay.test",
            "RELAY_BOUNCE_MAILBOX__HOST": "127.0.0.1",
            "RELAY_BOUNCE_MAILBOX__PORT": str(port),
            "RELAY_BOUNCE_MAILBOX__TLS": "none",
            "RELAY_BOUNCE_MAILBOX__USER": "bounces",
            "RELAY_BOUNCE_MAILBOX__PASSWORD": "s3cret-pass",
            "RELAY_BOUNCE_MAILBOX__INTERVAL": "0.2",
        },
    )
    tenant = await rows.tenant(db)
    message = await rows.message(db, tenant)
    delivery = await rows.delivery(db, message, recipient="gone@example.net", state="delivered")
    token = load_keyring(config).sign(TokenData(TokenKind.BOUNCE, delivery))
    verp = f"bounces+{token}@bounces.relay.test".encode()
    (maildir / "new" / "1.host").write_bytes(DSN.replace(b"bounces@relay.example", verp))
    _own(maildir)
    stopping = asyncio.Event()
    task = asyncio.create_task(serve(config, db, stopping))
    try:
        async with asyncio.timeout(20):
            while True:
                async with db.read() as conn:
                    state = (
                        await conn.execute(
                            select(deliveries.c.state).where(deliveries.c.id == delivery)
                        )
                    ).scalar()
                if state == "bounced":
                    break
                await asyncio.sleep(0.1)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 15)
    async with db.read() as conn:
        (report,) = (await conn.execute(select(inbound_reports))).mappings()
        found = await suppressions.suppressed_among(conn, tenant, ["gone@example.net"])
    assert report["matched"] is True
    assert found == {"gone@example.net": "hard_bounce"}
