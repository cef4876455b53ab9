"""Render throughput: a 20 KB HTML newsletter with 30 links, per delivery, on one core.

Input: counts from the command line. Output: a table of messages/s (render only, per-message
plan cached and cold; signature alone and render+sign for RSA-2048 and Ed25519). Side effects:
none (keys are generated in memory). Run: .venv/bin/python bench/render_bench.py [-n 2000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from relay.config import Config
from relay.render import Renderer, RenderJob, collect_links
from relay.render._plan import PlanCache
from relay.render.dkim import DkimSigner, generate_key, make_key
from relay.render.tokens import Keyring


def newsletter(links: int = 30, size: int = 20_000) -> bytes:
    items = [
        f"<tr><td><h2>Item {i}</h2><p>Lorem ipsum dolor sit amet, consectetur adipiscing elit. "
        f'<a href="https://shop.example.com/products/{i}?utm_source=news&amp;utm_medium=email">'
        f"Buy item {i}</a></p></td></tr>\n"
        for i in range(links)
    ]
    body = "".join(items)
    filler = "<p>" + "Sed do eiusmod tempor incididunt ut labore et dolore. " * 10 + "</p>\n"
    while len(body) < size - 400:
        body += filler
    html = f"<!DOCTYPE html>\n<html><head><title>News</title></head>\n<body><table>\n{body}" \
           "</table></body>\n</html>\n"  # fmt: skip
    head = (
        "From: Shop <news@example.com>\r\nTo: ann@example.org\r\nSubject: This week\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <n1@example.com>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return (head + html.replace("\n", "\r\n")).encode()


def rate(n: int, fn: Callable[[int], Any]) -> float:
    """Calls per second of this process's CPU time: one core, and fair on a busy machine."""
    fn(0)  # warm up
    start = time.process_time()
    for i in range(1, n + 1):
        fn(i)
    return n / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=2000, help="renders per unsigned measurement")
    parser.add_argument("--signed", type=int, default=200, help="renders per signed measurement")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    config = Config(bounce={"domain": "bounces.example.net"})
    keyring = Keyring(b"benchmark-secret-0123456789")
    raw = newsletter()
    urls = collect_links(raw, config)
    links = {u: i + 1 for i, u in enumerate(urls)}

    def job(i: int, message_id: int = 1) -> RenderJob:
        return RenderJob(i, message_id, "ann@example.org", "news@example.com", raw, links,
                         True, True)  # fmt: skip

    results: dict[str, float] = {}
    plain = Renderer(config, keyring)
    results["render (plan cached)"] = rate(args.n, lambda i: plain.render(job(i)))
    results["render (cold, new message each)"] = rate(
        # An empty plan cache each time: the process-wide one would find the same bytes.
        args.n // 10, lambda i: Renderer(config, keyring, plans=PlanCache()).render(job(i, i))
    )
    rendered = plain.render(job(1)).data
    for algorithm in ("rsa-sha256", "ed25519-sha256"):
        private, _ = generate_key(algorithm)
        key = make_key("example.com", "s1", algorithm, private)
        alone = DkimSigner([key])
        results[f"{algorithm} signature alone"] = rate(
            args.signed, lambda i, s=alone: s.sign(rendered, "example.com")
        )
        signer = Renderer(config, keyring, DkimSigner([key]))
        results[f"render + {algorithm}"] = rate(
            args.signed, lambda i, r=signer: r.render(job(i))
        )
    info = {"message_bytes": len(raw), "links": len(urls), "msgs_per_s": results}
    if args.json:
        print(json.dumps(info))
        return
    print(f"message: {len(raw)} bytes, {len(urls)} tracked links; per CPU-second of one core")
    for name, value in results.items():
        print(f"  {name:<36} {value:10.0f} msg/s   {1000 / value:8.3f} ms/msg")


if __name__ == "__main__":
    main()
