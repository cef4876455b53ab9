"""Locate MIME leaf parts inside the raw message bytes, and decode/re-encode their bodies.

Input: the original message (CRLF). Output: `Part`s with byte offsets of each leaf body, its
content type, charset and transfer encoding, so rendering can splice rewritten bodies into the
original bytes and leave every other byte (boundaries, attachments) exactly as it was.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

MAX_LINE = 998
_HEADER_PARSER = BytesHeaderParser(policy=compat32)
_NESTING_LIMIT = 20


@dataclass(frozen=True, slots=True)
class Part:
    header_start: int
    body_start: int
    body_end: int
    content_type: str  # lower-case "type/subtype"
    charset: str
    encoding: str  # lower-case Content-Transfer-Encoding, "7bit" when absent
    attachment: bool  # Content-Disposition: attachment (a file, not the message text)


def to_crlf(raw: bytes) -> bytes:
    """The message with every line ending as CRLF (the wire form)."""
    if b"\n" not in raw.replace(b"\r\n", b""):
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def header_end(raw: bytes, start: int = 0, end: int | None = None) -> int:
    """Offset of the empty line that ends the header block starting at `start` (or where the
    block would end: `start` itself when there are no headers)."""
    end = len(raw) if end is None else end
    if raw.startswith(b"\r\n", start):
        return start
    pos = raw.find(b"\r\n\r\n", start, end)
    return end if pos == -1 else pos + 2


def parse_headers(raw: bytes, start: int, end: int) -> Message:
    return _HEADER_PARSER.parsebytes(raw[start:end])


def leaves(raw: bytes) -> list[Part]:
    """Every non-multipart part of the message, in order (message/rfc822 is a leaf: a
    forwarded message is not ours to rewrite)."""
    out: list[Part] = []
    _walk(raw, 0, len(raw), out, 0)
    return out


def _walk(raw: bytes, start: int, end: int, out: list[Part], depth: int) -> None:
    hend = header_end(raw, start, end)
    headers = parse_headers(raw, start, hend)
    body_start = min(hend + 2, end)
    ctype = headers.get_content_type()
    boundary = headers.get_boundary()
    if ctype.startswith("multipart/") and boundary and depth < _NESTING_LIMIT:
        quoted = re.escape(boundary.encode("latin-1", "replace"))
        delim = re.compile(rb"(?m)^--" + quoted + rb"(--)?[ \t]*(?:\r\n|\Z)")
        marks = list(delim.finditer(raw, body_start, end))
        for this, nxt in zip(marks, marks[1:], strict=False):
            if this.group(1):
                break
            part_start = this.end()  # past the CRLF of the delimiter line
            part_end = nxt.start() - 2  # the CRLF before a delimiter belongs to it
            if part_start <= part_end:
                _walk(raw, part_start, part_end, out, depth + 1)
        return
    charset = headers.get_content_charset() or "us-ascii"
    cte = str(headers.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    disposition = str(headers.get("Content-Disposition", "")).split(";")[0].strip().lower()
    out.append(Part(start, body_start, end, ctype, charset, cte, disposition == "attachment"))


def decode_body(body: bytes, encoding: str) -> bytes | None:
    """The body's octets, or None for an encoding we do not rewrite."""
    if encoding in ("7bit", "8bit", "binary"):
        return body
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    if encoding == "base64":
        try:
            return base64.b64decode(body, validate=False)
        except binascii.Error:
            return None
    return None


def encode_body(data: bytes, encoding: str) -> bytes:
    """`data` in `encoding`, CRLF line endings, lines within RFC 5322 limits."""
    if encoding == "quoted-printable":
        lf = data.replace(b"\r\n", b"\n")
        return binascii.b2a_qp(lf, istext=True).replace(b"\n", b"\r\n")
    if encoding == "base64":
        encoded = base64.encodebytes(data)  # 76-character lines, LF
        return encoded.rstrip(b"\n").replace(b"\n", b"\r\n")
    return to_crlf(data)


def lines_fit(data: bytes) -> bool:
    return len(data) <= MAX_LINE or max(map(len, data.split(b"\r\n"))) <= MAX_LINE
