"""The per-message half of rendering: where the trackable links and the pixel go.

Input: the stored original and config. Output: a `MessagePlan` (CRLF bytes, header facts,
and for each rewritable part its decoded octets with byte spans of the links), computed once
per message and cached, so rendering each recipient is only token signing and splicing.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import getaddresses
from urllib.parse import urlsplit

from relay.config import Config
from relay.render import _html, _mime

CACHE_SIZE = 4096  # plans; enough for a backlog of single-recipient mail between intake and send
CACHE_BYTES = 64 * 2**20  # originals and decoded parts held by the plan cache
_TEXT_URL = re.compile(r"https?://[^\s<>\"'\[\]{}|\\^`]+")
_TRAILING_PUNCT = ".,;:!?)"


@dataclass(frozen=True, slots=True)
class ByteSpan:
    start: int
    end: int
    url: str


@dataclass(frozen=True, slots=True)
class PartPlan:
    header_start: int
    body_start: int  # in the message
    body_end: int  # in the message, before trailing CRLFs (kept as they are)
    encoding: str
    charset: str
    decoded: bytes  # the body's octets after transfer decoding
    links: tuple[ByteSpan, ...]  # offsets into `decoded`
    pixel_at: int | None  # offset into `decoded`; None for text/plain


@dataclass(frozen=True, slots=True)
class MessagePlan:
    raw: bytes  # CRLF line endings
    header_end: int  # offset of the empty line ending the top-level header
    present: frozenset[str]  # lower-case names of top-level header fields
    from_domain: str
    digest: str  # of the original, for a deterministic Message-ID
    parts: tuple[PartPlan, ...]

    def urls(self) -> list[str]:
        seen: dict[str, None] = {}
        for part in self.parts:
            for span in part.links:
                seen.setdefault(span.url, None)
        return list(seen)


def link_filter(config: Config) -> Callable[[str], bool]:
    base = config.http.public_url.rstrip("/")
    ours = (base + "/track/", base + "/unsubscribe/")
    excluded = tuple(d.lower().strip(".") for d in config.tracking.exclude_domains)

    def want(url: str) -> bool:
        lowered = url.lower()
        if not lowered.startswith(("http://", "https://")) or url.startswith(ours):
            return False
        try:
            host = (urlsplit(url).hostname or "").rstrip(".")
        except ValueError:
            return False
        if not host:
            return False
        return not any(host == d or host.endswith("." + d) for d in excluded)

    return want


def build(raw: bytes, config: Config) -> MessagePlan:
    raw = _mime.to_crlf(raw)
    hend = _mime.header_end(raw)
    headers = _mime.parse_headers(raw, 0, hend)
    present = frozenset(k.lower() for k in headers.keys())
    addresses = getaddresses(_raw_header(raw[:hend], b"from"))
    from_addr = addresses[0][1] if addresses else ""
    from_domain = from_addr.rpartition("@")[2].strip().strip(">").lower()
    try:  # DKIM d= and key lookup use the A-label (RFC 6376 §3.5; RFC 8616)
        from_domain = from_domain.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    want = link_filter(config)
    text_links = config.tracking.rewrite_text_links
    parts = []
    for part in _mime.leaves(raw):
        if part.attachment:
            continue
        if part.content_type == "text/html" or (text_links and part.content_type == "text/plain"):
            planned = _plan_part(raw, part, want)
            if planned is not None:
                parts.append(planned)
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return MessagePlan(raw, hend, present, from_domain, digest, tuple(parts))


def _plan_part(raw: bytes, part: _mime.Part, want: Callable[[str], bool]) -> PartPlan | None:
    end = part.body_end
    while end - 2 >= part.body_start and raw[end - 2 : end] == b"\r\n":
        end -= 2
    decoded = _mime.decode_body(raw[part.body_start : end], part.encoding)
    if decoded is None or not _ascii_compatible(part.charset):
        return None
    text = decoded.decode(part.charset, "surrogateescape")
    if part.content_type == "text/html":
        plan = _html.scan(text, want)
        spans = [(s.start, s.end, s.url) for s in plan.links]
        pixel: int | None = plan.pixel_at
    else:
        spans = [(m.start(), m.start() + len(u), u) for m in _TEXT_URL.finditer(text)
                 if want(u := m.group().rstrip(_TRAILING_PUNCT))]  # fmt: skip
        pixel = None
    # Text offsets → byte offsets, one segment at a time (segments start and end in ASCII,
    # so this holds for stateful charsets such as ISO-2022-JP too); checked, never trusted.
    links, pos, byte_pos = [], 0, 0
    cuts = sorted(spans + ([(pixel, pixel, "")] if pixel is not None else []))
    byte_pixel: int | None = None
    for start, stop, url in cuts:
        byte_pos += len(text[pos:start].encode(part.charset, "surrogateescape"))
        width = len(text[start:stop].encode(part.charset, "surrogateescape"))
        if url:
            if decoded[byte_pos : byte_pos + width] != text[start:stop].encode(
                part.charset, "surrogateescape"
            ):
                return None
            links.append(ByteSpan(byte_pos, byte_pos + width, url))
        else:
            byte_pixel = byte_pos
        byte_pos += width
        pos = stop
    return PartPlan(
        part.header_start, part.body_start, end, part.encoding, part.charset, decoded,
        tuple(links), byte_pixel,
    )  # fmt: skip


PLAN_FORMAT = 1


def dump(plan: MessagePlan, config: Config) -> bytes:
    """The plan without the bytes it points into, for `messages.render_plan`: intake builds
    the plan anyway (to store the message's links), so a delivery process that does not
    share intake's plan cache restores it instead of parsing the message again."""
    parts = [
        [p.header_start, p.body_start, p.body_end, p.encoding, p.charset, p.pixel_at,
         [[s.start, s.end, s.url] for s in p.links]]
        for p in plan.parts
    ]  # fmt: skip
    doc = [PLAN_FORMAT, _stamp(config), plan.header_end, sorted(plan.present),
           plan.from_domain, plan.digest, parts]  # fmt: skip
    return json.dumps(doc, separators=(",", ":")).encode()


def load(raw: bytes, stored: bytes, config: Config) -> MessagePlan | None:
    """The plan `dump` wrote for these bytes; None when it was made for other bytes or
    another tracking config, or cannot be read (the caller then builds it afresh)."""
    try:
        fmt, stamp, header_end, present, from_domain, digest, parts = json.loads(stored)
        if fmt != PLAN_FORMAT or stamp != _stamp(config):
            return None
        raw = _mime.to_crlf(raw)
        if digest != hashlib.sha256(raw).hexdigest()[:16]:
            return None
        planned = []
        for header_start, body_start, body_end, encoding, charset, pixel_at, links in parts:
            decoded = _mime.decode_body(raw[body_start:body_end], encoding)
            if decoded is None:
                return None
            spans = tuple(ByteSpan(start, end, url) for start, end, url in links)
            planned.append(
                PartPlan(header_start, body_start, body_end, encoding, charset, decoded, spans,
                         pixel_at)
            )  # fmt: skip
        return MessagePlan(raw, header_end, frozenset(present), from_domain, digest,
                           tuple(planned))  # fmt: skip
    except (ValueError, TypeError):
        return None


def _stamp(config: Config) -> str:
    return hashlib.sha256(repr(_shaping(config)).encode()).hexdigest()[:16]


def _raw_header(block: bytes, name: bytes) -> list[str]:
    """Unfolded values of a header field, as UTF-8 (RFC 6532 allows it raw in headers)."""
    values: list[str] = []
    current: list[bytes] | None = None
    for line in block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and current is not None:
            current.append(line)
            continue
        if current is not None:
            values.append(b"".join(current).decode("utf-8", "replace").strip())
            current = None
        field, sep, value = line.partition(b":")
        if sep and field.strip().lower() == name:
            current = [value]
    if current is not None:
        values.append(b"".join(current).decode("utf-8", "replace").strip())
    return values


def _ascii_compatible(charset: str) -> bool:
    try:
        codecs.lookup(charset)
        return "href=https://x/".encode(charset) == b"href=https://x/"
    except (LookupError, UnicodeError):
        return False


class PlanCache:
    """An LRU of plans keyed by the message's bytes (and the config that shapes a plan).

    One cache per process (`SHARED`): intake's link collection builds a message's plan, and
    the renderer finds it again for every recipient, without a second HTML scan. Keys are
    the bytes themselves (compared in full on a hash match), so an entry can never be stale;
    bounded by count and by total size, so large messages cannot pin much memory.
    """

    def __init__(self, size: int = CACHE_SIZE, max_bytes: int = CACHE_BYTES) -> None:
        self._size, self._max_bytes = size, max_bytes
        self._plans: OrderedDict[tuple[bytes, tuple[object, ...]], MessagePlan] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, raw: bytes, config: Config, stored: bytes | None = None) -> MessagePlan:
        """The message's plan: cached, else restored from `stored` (see `dump`), else built."""
        key = (raw, _shaping(config))
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                self.hits += 1
                return plan
            self.misses += 1
        plan = (load(raw, stored, config) if stored else None) or build(raw, config)
        with self._lock:
            if key not in self._plans:
                self._plans[key] = plan
                self._bytes += _weight(plan)
            while self._plans and (len(self._plans) > self._size or self._bytes > self._max_bytes):
                _, old = self._plans.popitem(last=False)
                self._bytes -= _weight(old)
        return plan


def _shaping(config: Config) -> tuple[object, ...]:
    """The config values a plan depends on (a reload that changes them misses the cache)."""
    tracking = config.tracking
    return (config.http.public_url, tuple(tracking.exclude_domains), tracking.rewrite_text_links)


def _weight(plan: MessagePlan) -> int:
    return len(plan.raw) + sum(len(p.decoded) for p in plan.parts)


SHARED = PlanCache()
