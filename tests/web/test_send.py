"""POST /api/v1/messages: MIME built right, stored through the SMTP intake, limits, sender
domains, JSON errors, tenant isolation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from relay.config import Config
from relay.render.tokens import Keyring
from relay.store import tenants
from relay.store.db import Database
from relay.store.tables import campaigns, deliveries, messages
from relay.web.app import create_app
from tests.web.conftest import SECRET, Tenant, state

SEND = "/api/v1/messages"


@pytest.fixture
async def sender(db: Database, app: Starlette) -> AsyncIterator[Tenant]:
    """A tenant allowed to send from example.com; closes the app's intake afterwards."""
    tenant = await tenants.add_tenant(db, "sender", sender_domains=["example.com"])
    _key, secret = await tenants.create_api_key(db, tenant, "send")
    yield Tenant(tenant.id, secret)
    await state(app).intake.close()


async def _raw(db: Database, message_id: int) -> EmailMessage:
    async with db.read() as conn:
        raw = (
            await conn.execute(select(messages.c.raw).where(messages.c.id == message_id))
        ).scalar_one()
    msg = message_from_bytes(raw, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    return msg


def _error(r: httpx.Response, status: int, code: str, words: str = "") -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and words in err["message"], err


async def test_text_message_stored_through_intake(
    client: httpx.AsyncClient, db: Database, sender: Tenant
) -> None:
    body = {
        "from": "Shop <shop@example.com>",
        "to": ["ann@dest.test", "Bob <bob@dest.test>"],
        "cc": "carl@dest.test",
        "bcc": ["dora@dest.test"],
        "subject": "Grüße aus Köln",
        "text": "Hallo — schöne Grüße\n" + "x" * 200 + "\n",
        "headers": {"Reply-To": "help@example.com", "X-Order": "42"},
    }
    r = await client.post(SEND, json=body, headers=sender.auth)
    assert r.status_code == 202, r.text
    out = r.json()
    got = {(d["recipient"], d["type"], d["state"]) for d in out["deliveries"]}
    assert got == {
        ("ann@dest.test", "to", "queued"),
        ("bob@dest.test", "to", "queued"),
        ("carl@dest.test", "cc", "queued"),
        ("dora@dest.test", "bcc", "queued"),
    }
    async with db.read() as conn:
        rows = (
            await conn.execute(
                select(deliveries.c.id, deliveries.c.tenant_id).where(
                    deliveries.c.message_id == out["id"]
                )
            )
        ).all()
    assert sorted(r.id for r in rows) == sorted(d["id"] for d in out["deliveries"])
    assert {r.tenant_id for r in rows} == {sender.id}
    msg = await _raw(db, out["id"])
    assert msg["Subject"] == "Grüße aus Köln"
    assert msg["From"] == "Shop <shop@example.com>"
    assert msg["Reply-To"] == "help@example.com" and msg["X-Order"] == "42"
    assert msg["Bcc"] is None and msg["Date"] and msg["Message-ID"] == out["message_id_header"]
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert msg["Content-Transfer-Encoding"] in ("quoted-printable", "base64", "8bit")
    assert msg.get_content().replace("\r\n", "\n") == body["text"]


async def test_text_and_html_make_multipart_alternative(
    client: httpx.AsyncClient, db: Database, sender: Tenant
) -> None:
    body = {
        "from": "shop@example.com",
        "to": "ann@dest.test",
        "subject": "Hi",
        "text": "plain ✓\n",
        "html": "<p>html ✓ <a href='https://shop.example/x'>x</a></p>\n",
        "campaign": "winter sale",
    }
    r = await client.post(SEND, json=body, headers=sender.auth)
    assert r.status_code == 202, r.text
    msg = await _raw(db, r.json()["id"])
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    texts = [p.get_content().replace("\r\n", "\n") for p in parts]
    assert texts == [body["text"], body["html"]]
    assert msg["X-Campaign-ID"] is None  # read and stripped by intake, as for SMTP
    async with db.read() as conn:
        row = (
            await conn.execute(
                select(campaigns.c.name, campaigns.c.tenant_id)
                .join(messages, messages.c.campaign_id == campaigns.c.id)
                .where(messages.c.id == r.json()["id"])
            )
        ).one()
    assert (row.name, row.tenant_id) == ("winter sale", sender.id)
    html_only = {**body, "text": None}
    r = await client.post(SEND, json=html_only, headers=sender.auth)
    assert r.status_code == 202, r.text
    assert (await _raw(db, r.json()["id"])).get_content_type() == "text/html"


async def test_tenant_isolation(
    client: httpx.AsyncClient, sender: Tenant, tenant_b: Tenant, admin: Tenant
) -> None:
    r = await client.post(
        SEND,
        json={"from": "shop@example.com", "to": "ann@dest.test", "text": "hi", "campaign": "c1"},
        headers=sender.auth,
    )
    assert r.status_code == 202, r.text
    message_id = r.json()["id"]
    assert (await client.get(f"{SEND}/{message_id}", headers=sender.auth)).status_code == 200
    _error(await client.get(f"{SEND}/{message_id}", headers=tenant_b.auth), 404, "not_found")
    listed = await client.get(SEND, headers=tenant_b.auth)
    assert listed.status_code == 200 and listed.json()["items"] == []
    _error(await client.get("/api/v1/campaigns/c1", headers=tenant_b.auth), 404, "not_found")
    # An admin key must say for which tenant it sends.
    _error(
        await client.post(SEND, json={"from": "a@example.com"}, headers=admin.auth),
        400,
        "invalid_parameter",
        "tenant",
    )
    r = await client.post(
        f"{SEND}?tenant={sender.id}",
        json={"from": "shop@example.com", "to": "x@dest.test", "text": "hi"},
        headers=admin.auth,
    )
    assert r.status_code == 202, r.text


async def test_sender_domain_enforced(
    client: httpx.AsyncClient, sender: Tenant, tenant_b: Tenant
) -> None:
    body = {"from": "shop@elsewhere.test", "to": "ann@dest.test", "text": "hi"}
    _error(await client.post(SEND, json=body, headers=sender.auth), 403, "sender_not_allowed")
    # A tenant without sender domains may send from any domain.
    assert (await client.post(SEND, json=body, headers=tenant_b.auth)).status_code == 202


BASE = {"from": "shop@example.com", "to": "a@dest.test", "text": "x"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"from": None}, "from"),
        ({"from": "not an address"}, "from"),
        ({"from": "a@example.com, b@example.com"}, "from"),
        ({"from": "H1,.:x"}, "from"),  # CPython's header parser raises AttributeError
        ({"to": ".:"}, "to"),
        ({"to": None}, "to"),
        ({"to": ["a@dest.test", 3]}, "to"),
        ({"to": "a@dest.test\r\nBcc: e@evil.test"}, "to"),
        ({"text": None}, "text"),
        ({"text": 5}, "text"),
        ({"subject": "a\nB: c"}, "subject"),
        ({"headers": []}, "headers"),
        ({"headers": {"X-A": "1\nB: 2"}}, "headers"),
        ({"headers": {"Bad Name": "1"}}, "headers"),
        ({"headers": {"Subject": "1"}}, "headers"),
        ({"campaign": ""}, "campaign"),
        ({"attachments": []}, "attachments"),
    ],
)
async def test_bad_input_is_a_json_error(
    client: httpx.AsyncClient, sender: Tenant, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    r = await client.post(SEND, json=body, headers=sender.auth)
    _error(r, 400, "invalid_parameter", field)


async def test_body_errors_and_limits(
    client: httpx.AsyncClient, db: Database, keyring: Keyring, tmp_path: Path, sender: Tenant
) -> None:
    _error(await client.post(SEND, json={"from": "a@example.com"}), 401, "unauthorized")
    _error(await client.post(SEND, content=b"{nope", headers=sender.auth), 400, "invalid_json")
    _error(await client.post(SEND, json=[1, 2], headers=sender.auth), 400, "invalid_json")
    small = Config.model_validate(
        {
            "data_dir": str(tmp_path),
            "tracking": {"secret": SECRET},
            "smtp": {"max_recipients": 2, "max_message_size": 1000},
        }
    )
    app = create_app(small, db, keyring=keyring)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as c:
        too_many = {"from": "shop@example.com", "to": ["a@x.test", "b@x.test"], "bcc": "c@x.test"}
        _error(
            await c.post(SEND, json={**too_many, "text": "x"}, headers=sender.auth),
            400,
            "invalid_parameter",
            "at most 2",
        )
        big = {"from": "shop@example.com", "to": "a@x.test", "text": "y" * 1500}
        _error(await c.post(SEND, json=big, headers=sender.auth), 413, "too_large")
        huge = {**big, "text": "y" * 3000}
        _error(await c.post(SEND, json=huge, headers=sender.auth), 413, "too_large")
        ok = {"from": "shop@example.com", "to": "a@x.test", "text": "fits"}
        assert (await c.post(SEND, json=ok, headers=sender.auth)).status_code == 202
    await state(app).intake.close()
