"""`relay tls selfsigned`: write a self-signed certificate and key for testing STARTTLS."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from relay.cli._args import command, group
from relay.cli._context import Context
from relay.cli._output import print_json
from relay.errors import ConfigError


def register(sub: Any) -> None:
    tls = group(sub, "tls", "TLS helpers for the SMTP listeners")
    p = command(
        tls,
        "selfsigned",
        run_selfsigned,
        "write cert.pem and key.pem (self-signed, for testing) into a folder",
        json=True,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    p.add_argument("--hostname", default="localhost", help="name or IP the certificate is for")
    p.add_argument("--days", type=int, default=365, help="validity in days (default 365)")


async def run_selfsigned(args: argparse.Namespace, ctx: Context) -> int:
    from relay.ingress.tls import write_self_signed

    if args.days < 1:
        raise ConfigError("--days", f"expected a positive number of days, got {args.days}")
    try:
        cert, key = write_self_signed(Path(args.out), args.hostname, args.days)
    except OSError as e:
        raise ConfigError("--out", f"cannot write into {args.out!r}: {e.strerror}") from None
    if args.json:
        print_json({"tls_cert": str(cert), "tls_key": str(key)})
    else:
        print(f"wrote {cert} and {key}; in the config:")
        print(f'  [smtp]\n  tls_cert = "{cert}"\n  tls_key = "{key}"')
    return 0
