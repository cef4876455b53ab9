"""`relay dkim keygen`: make a DKIM key pair, write the private key (0600), print the TXT record."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from relay.cli._args import command, group
from relay.cli._context import Context
from relay.cli._output import emit_one
from relay.errors import RelayError
from relay.render.dkim import generate_key, txt_record

ALGORITHMS = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}


def register(sub: Any) -> None:
    d = group(sub, "dkim", "DKIM signing keys")
    p = command(
        d, "keygen", keygen, "make a key pair and print the DNS TXT record to publish", json=True
    )
    p.add_argument("domain", help="the sender domain the key signs for, e.g. example.com")
    p.add_argument("--selector", required=True, help="the DKIM selector, e.g. s1")
    p.add_argument(
        "--algorithm",
        choices=sorted(ALGORITHMS),
        default="rsa",
        help="rsa (2048-bit rsa-sha256, default) or ed25519 (ed25519-sha256)",
    )
    p.add_argument(
        "--out", metavar="PATH", help="where to write the private key "
        "(default: {data_dir}/dkim/DOMAIN.SELECTOR.key); never overwritten",
    )  # fmt: skip


async def keygen(args: argparse.Namespace, ctx: Context) -> int:
    domain = args.domain.strip().lower().rstrip(".")
    if not domain or "." not in domain or "/" in domain:
        raise RelayError(f"dkim keygen: {args.domain!r} is not a domain name")
    algorithm = ALGORITHMS[args.algorithm]
    if args.out:
        path = Path(args.out)
    else:
        path = Path(ctx.config.data_dir) / "dkim" / f"{domain}.{args.selector}.key"
    private, value = generate_key(algorithm)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise RelayError(f"dkim keygen: {str(path)!r} exists; not overwriting a key") from None
    except OSError as e:
        raise RelayError(f"dkim keygen: cannot create {str(path)!r}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    record = txt_record(domain, args.selector, value)
    emit_one(
        {"domain": domain, "selector": args.selector, "algorithm": algorithm,
         "key_file": str(path), "dns_name": f"{args.selector}._domainkey.{domain}",
         "txt": value, "zone_line": record},
        args.json,
        [f"# private key written to {path} (mode 0600); add to the config:",
         f'#   [[dkim.keys]]  domain = "{domain}"  selector = "{args.selector}"  '
         f'key_file = "{path}"  algorithm = "{algorithm}"',
         "# publish this DNS record:", record],
    )  # fmt: skip
    return 0
