"""The traffic of a side-by-side run: one newsletter-like message, sent by smtp-source.

Input: a size in bytes. Output: the message file (multipart/alternative, text and HTML with
links, so relay's click tracking and open pixel have real work) and smtp-source's timing.
Every MTA gets the same bytes; envelope recipients differ per message (smtp-source -N).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench._mta import SENDER_DOMAIN, tool

RECIPIENT = "rcpt@example.org"
SENDER = f"news@{SENDER_DOMAIN}"
PARAGRAPH = (
    "Our spring collection is here: light jackets, linen shirts and the walking shoes "
    "you asked for. Members get free shipping on every order this week."
)


def message(size: int) -> bytes:
    """About `size` bytes (headers included), one tracked link per ~600 bytes of HTML."""
    head = [
        f"From: Bench News <{SENDER}>",
        f"To: <{RECIPIENT}>",
        "Subject: Spring collection",
        "MIME-Version: 1.0",
        'Content-Type: multipart/alternative; boundary="bench-boundary"',
        "",
        "--bench-boundary",
        "Content-Type: text/plain; charset=utf-8",
        "",
    ]
    text: list[str] = []
    html = ["<html><body>"]
    n = 0

    def length() -> int:
        return sum(len(x) + 2 for x in head + text + html) + 120

    while length() < size:
        n += 1
        text.append(PARAGRAPH[:76])
        text.append(f"https://shop.{SENDER_DOMAIN}/item/{n}")
        html.append(
            f'<p>{PARAGRAPH} <a href="https://shop.{SENDER_DOMAIN}/item/{n}">See item {n}</a>'
            "</p>"
        )
    lines = [
        *head, *text, "", "--bench-boundary", "Content-Type: text/html; charset=utf-8", "",
        *html, "</body></html>", "--bench-boundary--",
    ]  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Sent:
    ok: bool
    seconds: float
    error: str


def send(port: int, count: int, sessions: int, message_file: Path, timeout_s: float) -> Sent:
    """Run smtp-source to 127.0.0.1:port; it aborts on any reply other than the expected 2xx/3xx,
    so a clean exit means every message was accepted."""
    args = [
        tool("smtp-source"), "-s", str(sessions), "-m", str(count), "-F", str(message_file),
        "-f", SENDER, "-t", RECIPIENT, "-N", "-M", "bench-client.localdomain",
        f"127.0.0.1:{port}",
    ]  # fmt: skip
    started = time.perf_counter()
    try:
        out = subprocess.run(args, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return Sent(False, time.perf_counter() - started, f"smtp-source timed out ({timeout_s}s)")
    elapsed = time.perf_counter() - started
    error = out.stderr.decode(errors="replace").strip().splitlines()[-1:] if out.returncode else []
    return Sent(out.returncode == 0, elapsed, error[0] if error else "")
