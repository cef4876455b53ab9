"""Logging: structlog set up once. JSON lines under systemd or when asked, console on a TTY.

Events are dotted names with fields (`delivery.deferred`, message_id=…). Never pass secrets,
AUTH data, keys or message bodies. A leaf: imports nothing from relay.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def setup(level: str = "info", fmt: str = "auto") -> None:
    if fmt == "auto":
        under_systemd = "JOURNAL_STREAM" in os.environ or "INVOCATION_ID" in os.environ
        fmt = "console" if sys.stderr.isatty() and not under_systemd else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    elif fmt == "keyvalue":
        renderer = structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"])
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Libraries that use stdlib logging (uvicorn, aiosmtpd, alembic) go through the same level.
    logging.basicConfig(
        level=max(_LEVELS[level], logging.INFO),
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter


def get(name: str | None = None) -> Any:
    return structlog.get_logger(name) if name else structlog.get_logger()
