"""Logs of a real `relay serve`: one line per SMTP session and per delivery attempt with the
fields operators search by; secrets (AUTH passwords in every encoding, account passwords,
API keys, the tracking secret) and message bodies never appear. Also the key=value format
and the scrubbing safety net."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import time
from pathlib import Path

import httpx
import pytest
import structlog

from relay import log
from relay.config import DatabaseConfig
from relay.store.db import Database
from relay.store.tenants import create_api_key, get_tenant
from tests.peers import RecordingServer
from tests.serving import (
    ACCOUNT_PASSWORD,
    Served,
    SmtpClient,
    html_message,
    tenant_with_login,
    write_config,
)

BODY_MARKER = "BODYMARKER-31c9e0"
WRONG_PASSWORD = "WrongPass-5d1f2a"


async def _api_key(url: str) -> str:
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        _, key = await create_api_key(db, await get_tenant(db, "shop"))
    finally:
        await db.dispose()
    return key


async def test_one_line_per_session_and_attempt_and_no_secrets(tmp_path: Path, db_url: str) -> None:
    username, password = await tenant_with_login(db_url)
    api_key = await _api_key(db_url)
    async with RecordingServer() as mx:
        config = write_config(tmp_path, db_url, mx.port)  # log.level = debug: the most lines
        served = Served(config, tmp_path)
        try:
            await served.ready()
            # A failed AUTH PLAIN, then AUTH LOGIN (password in its own line), then mail.
            client, _ = await SmtpClient.connect(served.smtp_port)
            assert (await client.login(username, WRONG_PASSWORD)).startswith("535")
            assert (await client.command("AUTH LOGIN")).startswith("334")
            assert (await client.command(base64.b64encode(username.encode()).decode()))[:3] == "334"
            assert (await client.command(base64.b64encode(password.encode()).decode()))[:3] == "235"
            await client.begin(["r1@dest.example"])
            await client.send_raw(html_message("r1@dest.example", BODY_MARKER) + b".\r\n")
            assert (await client.reply()).startswith("250")
            await client.command("QUIT")
            await client.close()
            async with httpx.AsyncClient() as http:
                base = f"http://127.0.0.1:{served.http_port}/api/v1"
                auth = {"Authorization": f"Bearer {api_key}"}
                assert (await http.get(f"{base}/stats/overview", headers=auth)).status_code == 200
                bad = {"Authorization": f"Bearer {api_key[:-4]}xxxx"}
                assert (await http.get(f"{base}/stats/overview", headers=bad)).status_code == 401
            deadline = time.monotonic() + 15
            while not served.events("delivery.delivered"):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            served.signal(signal.SIGTERM)
            assert await served.wait(30) == 0
        finally:
            served.kill()
    text = served.text()
    secrets = {
        "AUTH password": password,
        "AUTH password (base64)": base64.b64encode(password.encode()).decode(),
        "AUTH PLAIN blob": base64.b64encode(f"\0{username}\0{password}".encode()).decode(),
        "wrong AUTH password": WRONG_PASSWORD,
        "account password": ACCOUNT_PASSWORD,
        "API key": api_key,
        "tracking secret": "test-tracking-secret-0123456789",
        "message body": BODY_MARKER,
    }
    leaked = [name for name, value in secrets.items() if value in text]
    assert leaked == []
    # Every line is one JSON document (journald/log shippers), library lines included.
    lines = text.splitlines()
    assert lines and all(json.loads(line)["event"] for line in lines)
    # No warning per login about aiosmtpd's own use of a deprecated attribute.
    assert not [e for e in served.logs() if e["level"] == "warning"], text

    session = [e for e in served.events("smtp.session") if e["messages"]]
    assert len(session) == 1
    assert session[0]["remote"] == "127.0.0.1"
    assert session[0]["tenant"] == "shop"
    assert session[0]["level"] == "info"
    (attempt,) = served.events("delivery.delivered")
    message_id = session[0]["message_ids"][0]
    assert attempt["message_id"] == message_id
    assert attempt["delivery_id"] and attempt["tenant_id"]
    assert attempt["mx"] == "127.0.0.1"


def test_keyvalue_format_and_scrubbing(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    log.setup("info", "keyvalue")
    try:
        logger = log.get("relay.test")
        logger.info("test.line", message_id=7, password="hunter2", api_key="k", body=b"x")
        logger.debug("test.hidden")
        log.set_level("debug")
        logger.debug("test.shown")
    finally:  # leave logging as pytest had it
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith("timestamp=") and "level='info' event='test.line'" in out[0]
    assert "message_id=7" in out[0] and "password='****'" in out[0] and "hunter2" not in out[0]
    assert "api_key='****'" in out[0] and "body=" not in out[0]
    assert "event='test.shown'" in out[1]
