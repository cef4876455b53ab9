"""Find the trackable links of one HTML document and where its pixel goes.

Input: decoded HTML text and the link filter. Output: `HtmlPlan` (spans of href values, in
text offsets, and the insertion point before `</body>`). Uses the stdlib HTML tokenizer
(`html.parser`) and its own attribute regex, so only attribute values are ever replaced.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser, attrfind_tolerant  # type: ignore[attr-defined]

LINK_TAGS = frozenset({"a", "area"})
OPT_OUT_ATTR = "data-relay-notrack"


@dataclass(frozen=True, slots=True)
class LinkSpan:
    start: int  # offset of the attribute value in the text (inside the quotes)
    end: int
    url: str  # the URL with HTML character references resolved


@dataclass(frozen=True, slots=True)
class HtmlPlan:
    links: tuple[LinkSpan, ...]
    pixel_at: int  # offset where the open pixel is inserted


class _Scanner(HTMLParser):
    def __init__(self, text: str, want: Callable[[str], bool]) -> None:
        super().__init__(convert_charrefs=True)
        self._want = want
        self._line_starts = [0]
        pos = text.find("\n")
        while pos != -1:
            self._line_starts.append(pos + 1)
            pos = text.find("\n", pos + 1)
        self.links: list[LinkSpan] = []
        self.body_end: int | None = None

    def _offset(self) -> int:
        line, col = self.getpos()
        return self._line_starts[line - 1] + col

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in LINK_TAGS:
            return
        names = {name for name, _ in attrs}
        if OPT_OUT_ATTR in names:
            return
        raw = self.get_starttag_text() or ""
        base = self._offset()
        # Re-scan the raw tag text with the tokenizer's own attribute regex to get spans.
        pos = len(tag) + 1
        while pos < len(raw) and raw[pos].isspace():
            pos += 1
        while True:
            m = attrfind_tolerant.match(raw, pos)
            if not m or m.end() == pos:
                break
            pos = m.end()
            if m.group(1).lower() != "href" or m.group(3) is None:
                continue
            start, end = m.start(3), m.end(3)
            if raw[start : start + 1] in ("'", '"') and raw[end - 1 : end] == raw[start]:
                start, end = start + 1, end - 1
            url = html.unescape(raw[start:end]).strip()
            if self._want(url):
                self.links.append(LinkSpan(base + start, base + end, url))
            break  # the first href wins, as in browsers

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_end = self._offset()


def scan(text: str, want: Callable[[str], bool]) -> HtmlPlan:
    """Where the wanted links of `text` are and where the pixel goes (before the last
    `</body>`, else at the end)."""
    scanner = _Scanner(text, want)
    scanner.feed(text)
    scanner.close()
    pixel_at = scanner.body_end if scanner.body_end is not None else len(text)
    return HtmlPlan(tuple(scanner.links), pixel_at)
