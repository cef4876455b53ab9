"""Per-delivery rendering: the stored original in, the exact bytes for DATA out.

Input: a `RenderJob` (one delivery of one stored message). Output: `Rendered` (the envelope
sender, VERP when configured, and CRLF message bytes). Order: tracked links and open pixel
(text/html parts, spliced into the original bytes), then List-Unsubscribe(-Post), Message-ID,
Feedback-ID headers, then DKIM last. Pure: no I/O except the `from_config` loaders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from relay.config import Config
from relay.render import _mime, _plan
from relay.render.dkim import DkimSigner, load_signer
from relay.render.tokens import Keyring, TokenData, TokenKind, load_keyring

__all__ = ["RenderJob", "Rendered", "Renderer", "collect_links", "stored_plan", "tracking_flags"]

_CTE_LINE = re.compile(rb"(?im)^content-transfer-encoding:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*")


@dataclass(frozen=True, slots=True)
class RenderJob:
    delivery_id: int
    message_id: int
    recipient: str  # as stored (deliveries.recipient)
    mail_from: str  # envelope sender as submitted ('' for null sender)
    raw: bytes  # the stored original (intake already stripped X-Relay-*/campaign headers)
    links: Mapping[str, int]  # tracked URL -> links.id (stored once per message at intake)
    track_opens: bool
    track_clicks: bool
    plan: bytes | None = None  # messages.render_plan, when intake stored one


@dataclass(frozen=True, slots=True)
class Rendered:
    mail_from: str  # the VERP return path when bounce.domain is set, else job.mail_from
    data: bytes  # exact bytes for DATA, CRLF line endings


class Renderer:
    """Renders deliveries; per-message plans come from a (thread-safe) plan cache."""

    def __init__(
        self, config: Config, keyring: Keyring, dkim: DkimSigner | None = None,
        plans: _plan.PlanCache = _plan.SHARED,
    ) -> None:  # fmt: skip
        self._config = config
        self._keyring = keyring
        self._dkim = dkim
        self._base = config.http.public_url.rstrip("/")
        self._plans = plans  # shared with intake's collect_links in the same process

    @classmethod
    def from_config(cls, config: Config) -> Renderer:
        """Loads the tracking keyring and the DKIM keys (ConfigError naming the key if bad)."""
        return cls(config, load_keyring(config), load_signer(config))

    def render(self, job: RenderJob) -> Rendered:
        """Synchronous CPU work; run it in a thread when DKIM signing is configured."""
        plan = self._plans.get(job.raw, self._config, job.plan)
        raw = plan.raw
        patches = [(plan.header_end, plan.header_end, self._headers(plan, job))]
        if job.track_opens or job.track_clicks:
            for part in plan.parts:
                patches.extend(self._part(raw, part, job))
        patches.sort(key=lambda p: (p[0], p[1]))
        pieces: list[bytes] = []
        pos = 0
        for start, end, new in patches:
            pieces.append(raw[pos:start])
            pieces.append(new)
            pos = end
        pieces.append(raw[pos:])
        data = b"".join(pieces)
        if self._dkim is not None and plan.from_domain:
            data = self._dkim.sign(data, plan.from_domain)
        return Rendered(self._return_path(job), data)

    def _token(self, kind: TokenKind, delivery_id: int, link_id: int = 0) -> str:
        return self._keyring.sign(TokenData(kind, delivery_id, link_id))

    def _return_path(self, job: RenderJob) -> str:
        bounce = self._config.bounce
        if not (bounce.domain and bounce.verp and job.mail_from):
            return job.mail_from  # the null sender stays null: never bounce a bounce
        token = self._token(TokenKind.BOUNCE, job.delivery_id)
        return f"{bounce.local_prefix}+{token}@{bounce.domain}"

    def _headers(self, plan: _plan.MessagePlan, job: RenderJob) -> bytes:
        lines: list[str] = []
        bounce = self._config.bounce
        if "list-unsubscribe" not in plan.present:
            token = self._token(TokenKind.UNSUBSCRIBE, job.delivery_id)
            value = f"<{self._base}/unsubscribe/{token}>"
            if bounce.domain:
                value += f",\r\n <mailto:{bounce.local_prefix}+unsub-{token}@{bounce.domain}>"
            lines.append(f"List-Unsubscribe: {value}")
            if "list-unsubscribe-post" not in plan.present:
                lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        if "message-id" not in plan.present:
            domain = plan.from_domain or bounce.domain or "relay.invalid"
            lines.append(f"Message-ID: <relay.{job.message_id}.{plan.digest}@{domain}>")
        feedback = self._config.tracking.feedback_id
        if feedback and "feedback-id" not in plan.present:
            lines.append(f"Feedback-ID: {feedback}")
        return "".join(line + "\r\n" for line in lines).encode("utf-8")

    def _part(
        self, raw: bytes, part: _plan.PartPlan, job: RenderJob
    ) -> list[tuple[int, int, bytes]]:
        pieces: list[bytes] = []
        pos, changed = 0, False
        decoded = part.decoded
        if job.track_clicks:
            clicks: dict[str, bytes] = {}
            for span in part.links:
                link_id = job.links.get(span.url)
                if link_id is None:
                    continue  # not stored at intake: the store is the truth
                url = clicks.get(span.url)
                if url is None:
                    token = self._token(TokenKind.CLICK, job.delivery_id, link_id)
                    url = clicks[span.url] = f"{self._base}/track/click/{token}".encode("ascii")
                pieces += (decoded[pos : span.start], url)
                pos, changed = span.end, True
        if job.track_opens and part.pixel_at is not None:
            token = self._token(TokenKind.OPEN, job.delivery_id)
            pixel = (
                f'<img src="{self._base}/track/open/{token}" width="1" height="1" alt="" '
                'style="display:none">'
            ).encode("ascii")
            # Links are before the pixel point (it is at </body> or the end), so this is in order.
            pieces += (decoded[pos : part.pixel_at], pixel)
            pos, changed = part.pixel_at, True
        if not changed:
            return []
        pieces.append(decoded[pos:])
        body = b"".join(pieces)
        encoding = part.encoding
        encoded = _mime.encode_body(body, encoding)
        patches: list[tuple[int, int, bytes]] = []
        if encoding not in ("quoted-printable", "base64") and not _mime.lines_fit(encoded):
            # A 7bit/8bit line grew past 998 octets: only quoted-printable keeps it legal.
            encoded = _mime.encode_body(body, "quoted-printable")
            hend = part.body_start - 2
            cte = b"Content-Transfer-Encoding: quoted-printable\r\n"
            m = _CTE_LINE.search(raw, part.header_start, hend)
            patches.append((m.start(), m.end(), cte) if m else (hend, hend, cte))
        patches.append((part.body_start, part.body_end, encoded))
        return patches


def collect_links(raw: bytes, config: Config) -> list[str]:
    """Ordered, de-duplicated http(s) URLs that rendering would track in this message
    (same rules as rewriting: skips mailto/tel/anchors/excluded domains/opt-out attr/
    existing tracking and unsubscribe links). Intake stores them in `links`; the plan stays
    in the process's plan cache, so rendering the message here does not scan it again."""
    return _plan.SHARED.get(raw, config).urls()


def stored_plan(raw: bytes, config: Config) -> bytes:
    """The message's plan as `messages.render_plan` keeps it (from the plan cache, so right
    after `collect_links` this costs no second scan)."""
    return _plan.dump(_plan.SHARED.get(raw, config), config)


def tracking_flags(
    config: Config,
    tenant_settings: Mapping,  # type: ignore[type-arg]
    campaign_settings: Mapping,  # type: ignore[type-arg]
    message_options: Mapping,  # type: ignore[type-arg]
) -> tuple[bool, bool]:
    """(opens, clicks) after applying config → tenant → campaign → X-Relay-Track (stored by
    intake in messages.options['track'] as the header's value, e.g. 'opens,clicks' or 'none').
    Tenant and campaign settings use the keys `track_opens` and `track_clicks` (booleans)."""
    opens, clicks = config.tracking.opens, config.tracking.clicks
    for settings in (tenant_settings, campaign_settings):
        if isinstance(settings.get("track_opens"), bool):
            opens = settings["track_opens"]
        if isinstance(settings.get("track_clicks"), bool):
            clicks = settings["track_clicks"]
    track = message_options.get("track")
    if isinstance(track, str) and track.strip():
        words = {w.strip().lower() for w in track.split(",")}
        if "all" in words:
            words |= {"opens", "clicks"}
        opens, clicks = "opens" in words, "clicks" in words
    return opens, clicks
