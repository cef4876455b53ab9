"""The `sink` transport: writes each rendered message into a local Maildir.

Input: a leased delivery and its rendered bytes. Output: an `Outcome` (delivered, or a 451
when the disk refuses). Side effect: one file per delivery, written to tmp/ then renamed
into new/ (atomic), named after the delivery id so a retry overwrites rather than duplicates.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

from relay.model import Delivery, Outcome, SmtpReply


class SinkTransport:
    name = "sink"

    def __init__(self, directory: str | Path) -> None:
        self.root = Path(directory)
        self._host = socket.gethostname().replace("/", "_").replace(":", "_")
        for sub in ("tmp", "new", "cur"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    async def send(self, delivery: Delivery, mail_from: str, data: bytes) -> Outcome:
        started = time.monotonic()
        try:
            path = await asyncio.to_thread(self._write, delivery.id, data)
        except OSError as e:
            reply = SmtpReply(451, f"cannot write to the sink: {e.strerror}", "4.3.0")
            return Outcome(delivery.id, False, reply, self.name, duration_ms=_ms(started))
        reply = SmtpReply(250, f"written to {path.name}", "2.0.0")
        return Outcome(
            delivery.id, True, reply, self.name, remote_host="maildir", duration_ms=_ms(started)
        )

    def _write(self, delivery_id: int, data: bytes) -> Path:
        name = f"relay-{delivery_id}.{self._host}"
        tmp = self.root / "tmp" / name
        final = self.root / "new" / name
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        return final

    async def close(self) -> None:
        return None


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
