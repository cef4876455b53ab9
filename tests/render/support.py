"""Helpers for the render tests: a config, a renderer, and an independent reading of output.

The readers here use only the stdlib (`email`, `html.parser`), never relay's own MIME code,
so they check the renderer instead of agreeing with it.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import Message
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from relay.config import Config
from relay.render import Renderer, RenderJob, collect_links
from relay.render.tokens import InvalidToken, Keyring, TokenKind

CORPUS = Path(__file__).parent / "corpus"
PUBLIC = "http://127.0.0.1:8025"
KEYRING = Keyring(b"render-tests-secret-0123456789")
CLICK_URL = re.compile(re.escape(PUBLIC) + r"/track/click/([A-Za-z0-9_-]+)")
PIXEL = re.compile(r'<img src="' + re.escape(PUBLIC) + r'/track/open/[A-Za-z0-9_-]+" width="1" '
                   r'height="1" alt="" style="display:none">')  # fmt: skip


def config(**tracking: Any) -> Config:
    return Config(
        http={"public_url": PUBLIC},
        tracking={"exclude_domains": ["excluded.example"], **tracking},
        bounce={"domain": "bounces.example.net"},
    )


def job(raw: bytes, cfg: Config, delivery_id: int = 7, message_id: int = 3, **kw: Any) -> RenderJob:
    links = {url: 100 + i for i, url in enumerate(collect_links(raw, cfg))}
    args: dict[str, Any] = dict(
        delivery_id=delivery_id, message_id=message_id, recipient="ann@example.org",
        mail_from="news@example.com", raw=raw, links=links, track_opens=True, track_clicks=True,
    )  # fmt: skip
    args.update(kw)
    return RenderJob(**args)


def render(raw: bytes, cfg: Config | None = None, **kw: Any) -> tuple[RenderJob, bytes]:
    cfg = cfg or config()
    j = job(raw, cfg, **kw)
    return j, Renderer(cfg, KEYRING).render(j).data


def parse(data: bytes) -> Message:
    return email.message_from_bytes(data, policy=email.policy.compat32)


def leaves(msg: Message) -> list[Message]:
    return [p for p in msg.walk() if not p.is_multipart()]


def html_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(part.get_content_charset() or "us-ascii")


class _Hrefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("a", "area"):
            for name, value in attrs:
                if name == "href" and value is not None:
                    self.hrefs.append(value.strip())
                    break


def hrefs(html: str) -> list[str]:
    p = _Hrefs()
    p.feed(html)
    p.close()
    return p.hrefs


def unrewrite(url: str, j: RenderJob) -> str:
    """The original URL behind a click-tracking URL (token → link id → URL), else `url`."""
    m = CLICK_URL.fullmatch(url)
    if not m:
        return url
    try:
        data = KEYRING.verify(m.group(1), TokenKind.CLICK)
    except InvalidToken:
        return url  # a tracking link that was already in the original
    assert data.delivery_id == j.delivery_id
    by_id = {v: k for k, v in j.links.items()}
    return by_id[data.link_id]


def is_rewritable_html(part: Message) -> bool:
    return part.get_content_type() == "text/html" and part.get_filename() is None


def without_tracking(html: str) -> str:
    """The HTML with the pixel removed and href values blanked, for comparing the rest."""
    html = PIXEL.sub("", html)
    return re.sub(r"""(?i)(href\s*=\s*)("[^"]*"|'[^']*'|[^\s>]*)""", r"\1X", html)
