"""Renderer headers, VERP, tracking switches, determinism, tracking_flags and start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import Config
from relay.errors import ConfigError
from relay.render import Renderer, tracking_flags
from relay.render.tokens import TokenKind
from tests.render import support as s


def load(name: str) -> bytes:
    return (s.CORPUS / name).read_bytes()


def test_list_unsubscribe_one_click_and_mailto() -> None:
    j, data = s.render(load("html_only.eml"))
    msg = s.parse(data)
    value = " ".join(msg["List-Unsubscribe"].split())
    https, mailto = value.split(", ")
    token = https.removeprefix(f"<{s.PUBLIC}/unsubscribe/").removesuffix(">")
    assert s.KEYRING.verify(token, TokenKind.UNSUBSCRIBE).delivery_id == j.delivery_id
    assert mailto == f"<mailto:bounces+unsub-{token}@bounces.example.net>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_app_list_unsubscribe_and_threading_headers_kept() -> None:
    raw = load("own_list_unsubscribe.eml")
    _, data = s.render(raw)
    msg = s.parse(data)
    assert msg.get_all("List-Unsubscribe") == ["<https://app.example.com/unsub/1>"]
    assert msg["List-Unsubscribe-Post"] is None
    assert msg["In-Reply-To"] == "<parent@example.com>"
    assert msg["References"] == "<root@example.com> <parent@example.com>"
    assert data.endswith(raw.split(b"\r\n\r\n", 1)[1])


def test_message_id_added_only_when_missing() -> None:
    _, data = s.render(load("no_message_id.eml"))
    assert s.parse(data)["Message-ID"].startswith("<relay.3.")
    assert s.parse(data)["Message-ID"].endswith("@example.com>")
    _, data = s.render(load("html_only.eml"))
    assert s.parse(data).get_all("Message-ID") == ["<html@example.com>"]


def test_feedback_id_when_configured() -> None:
    cfg = s.config(feedback_id="news:relay:shop")
    _, data = s.render(load("plain.eml"), cfg)
    assert s.parse(data)["Feedback-ID"] == "news:relay:shop"
    _, data = s.render(load("plain.eml"))
    assert s.parse(data)["Feedback-ID"] is None


def test_verp_return_path() -> None:
    cfg = s.config()
    j = s.job(load("plain.eml"), cfg)
    out = Renderer(cfg, s.KEYRING).render(j)
    local, _, domain = out.mail_from.partition("@")
    assert domain == "bounces.example.net" and local.startswith("bounces+")
    assert s.KEYRING.verify(local.removeprefix("bounces+"), TokenKind.BOUNCE).delivery_id == 7


def test_null_sender_and_no_bounce_domain_keep_mail_from() -> None:
    cfg = s.config()
    j = s.job(load("plain.eml"), cfg, mail_from="")
    assert Renderer(cfg, s.KEYRING).render(j).mail_from == ""
    cfg = Config(http={"public_url": s.PUBLIC})
    j = s.job(load("plain.eml"), cfg)
    out = Renderer(cfg, s.KEYRING).render(j)
    assert out.mail_from == "news@example.com"
    assert "mailto:" not in s.parse(out.data)["List-Unsubscribe"]
    no_verp = s.config().bounce.model_copy(update={"verp": False})
    cfg = s.config().model_copy(update={"bounce": no_verp})
    assert Renderer(cfg, s.KEYRING).render(s.job(load("plain.eml"), cfg)).mail_from == (
        "news@example.com"
    )


def test_tracking_off_leaves_body_identical() -> None:
    raw = load("mixed_attachments.eml")
    _, data = s.render(raw, track_opens=False, track_clicks=False)
    assert data.split(b"\r\n\r\n", 1)[1] == raw.split(b"\r\n\r\n", 1)[1]


def test_opens_only_and_clicks_only() -> None:
    raw = load("html_only.eml")
    _, data = s.render(raw, track_clicks=False)
    text = s.html_text(s.parse(data))
    assert "/track/click/" not in text.replace("/track/click/AAAA", "") and s.PIXEL.search(text)
    _, data = s.render(raw, track_opens=False)
    text = s.html_text(s.parse(data))
    assert "/track/open/" not in text and "/track/click/" in text


def test_url_missing_from_links_is_untouched() -> None:
    raw = load("related_inline.eml")
    _, data = s.render(raw, links={})
    assert b'<a href="https://shop.example.com/sale">sale</a>' in data


def test_deterministic_and_per_delivery() -> None:
    raw = load("mixed_attachments.eml")
    cfg = s.config()
    j = s.job(raw, cfg)
    a = Renderer(cfg, s.KEYRING).render(j)
    b = Renderer(cfg, s.KEYRING).render(j)
    assert a == b
    other = Renderer(cfg, s.KEYRING).render(s.job(raw, cfg, delivery_id=8))
    assert other.data != a.data and other.mail_from != a.mail_from


def test_text_links_rewritten_when_configured() -> None:
    cfg = s.config(rewrite_text_links=True)
    raw = load("plain.eml")
    j, data = s.render(raw, cfg)
    body = s.parse(data).get_payload()
    assert isinstance(body, str)
    url = s.CLICK_URL.search(body)
    assert url and s.unrewrite(url.group(0), j) == "https://shop.example.com/sale"
    assert body.endswith(" for details.\r\n") or body.endswith(" for details.\n")


@pytest.mark.parametrize(
    ("tenant", "campaign", "options", "expected"),
    [
        ({}, {}, {}, (True, True)),
        ({"track_opens": False}, {}, {}, (False, True)),
        ({"track_opens": False}, {"track_opens": True, "track_clicks": False}, {}, (True, False)),
        ({}, {}, {"track": "none"}, (False, False)),
        ({"track_opens": False}, {}, {"track": "opens,clicks"}, (True, True)),
        ({}, {}, {"track": "clicks"}, (False, True)),
        ({}, {}, {"track": " Opens "}, (True, False)),
    ],
)
def test_tracking_flags(tenant: dict, campaign: dict, options: dict, expected: tuple) -> None:  # type: ignore[type-arg]
    assert tracking_flags(Config(), tenant, campaign, options) == expected


def test_tracking_flags_config_defaults() -> None:
    cfg = Config(tracking={"opens": False, "clicks": False})
    assert tracking_flags(cfg, {}, {}, {}) == (False, False)
    assert tracking_flags(cfg, {"track_clicks": True}, {}, {}) == (False, True)


def test_missing_dkim_key_is_config_error(tmp_path: Path) -> None:
    cfg = Config(
        data_dir=str(tmp_path),
        dkim={"keys": [{"domain": "example.com", "selector": "s1",
                        "key_file": str(tmp_path / "nope.key")}]},
    )  # fmt: skip
    with pytest.raises(ConfigError) as e:
        Renderer.from_config(cfg)
    assert e.value.key == "dkim.keys[0].key_file"


def test_invalid_dkim_key_is_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    cfg = Config(
        data_dir=str(tmp_path),
        dkim={"keys": [{"domain": "example.com", "selector": "s1", "key_file": str(bad)},
                       {"domain": "example.com", "selector": "s2", "key_file": str(bad),
                        "algorithm": "ed25519-sha256"}]},
    )  # fmt: skip
    with pytest.raises(ConfigError) as e:
        Renderer.from_config(cfg)
    assert e.value.key == "dkim.keys[0].key_file" and "not a valid rsa-sha256 key" in str(e.value)
