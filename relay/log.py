"""Logging: structlog set up once. JSON lines under systemd or when asked, key=value or
console otherwise; the level can change at run time (SIGHUP reload).

Events are dotted names with fields (`delivery.deferred`, message_id=…). Never pass secrets,
AUTH data, keys or message bodies; as a safety net, fields whose names look secret are
masked and body-like fields are dropped. A leaf: imports nothing from relay.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_level = logging.INFO
# Field names that never reach a log line with their value.
_SECRET_PARTS = ("password", "secret", "api_key", "apikey", "token", "authorization")
_BODY_FIELDS = frozenset({"body", "raw", "data", "content", "message_bytes"})


def _filter_level(_logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
    if _LEVELS.get(method, logging.INFO) < _level:
        raise structlog.DropEvent
    return event


@functools.lru_cache(maxsize=1024)
def _treatment(key: str) -> int:
    """0: keep the field, 1: mask its value, 2: drop it (decided once per field name)."""
    lowered = key.lower()
    if lowered in _BODY_FIELDS:
        return 2
    if any(part in lowered for part in _SECRET_PARTS) and not lowered.endswith("_file"):
        return 1
    return 0


def _scrub(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    for key in list(event):
        treatment = _treatment(key)
        if treatment == 2:
            del event[key]
        elif treatment == 1:
            event[key] = "****"
    return event


class _DropDeprecation(logging.Filter):
    """aiosmtpd warns on every successful AUTH that its own code sets the deprecated
    Session.login_data: nothing an operator can act on, so not a warning line per login."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


_AIOSMTPD_NOISE = _DropDeprecation()


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
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            _filter_level,
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            _scrub,
            renderer,
        ],
        # Filtering happens in _filter_level so that set_level works on cached loggers too.
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Libraries that use stdlib logging (uvicorn, aiosmtpd, alembic) print in the same format,
    # with their logger's name, so that journald and log shippers see one kind of line.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _scrub,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    smtp_lib = logging.getLogger("mail.log")
    smtp_lib.setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    if _AIOSMTPD_NOISE not in smtp_lib.filters:
        smtp_lib.addFilter(_AIOSMTPD_NOISE)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migration plumbing at start-up
    set_level(level)


def set_level(level: str) -> None:
    """Change the level of every relay logger now (used by the SIGHUP reload)."""
    global _level
    _level = _LEVELS[level]
    logging.getLogger().setLevel(max(_level, logging.INFO))


def get(name: str | None = None) -> Any:
    return structlog.get_logger(name) if name else structlog.get_logger()


def smtp_session(
    logger: Any, remote: str, identity: Any, accepted: Sequence[int], error: object
) -> None:
    """The one line an inbound SMTP session leaves: who, as which tenant, which messages."""
    tenant = getattr(getattr(identity, "tenant", None), "name", None)
    credential = getattr(identity, "credential", None)
    logger.info(
        "smtp.session",
        remote=remote,
        tenant=tenant,
        username=getattr(credential, "username", None),
        message_ids=list(accepted),
        messages=len(accepted),
        error=type(error).__name__ if error is not None else None,
    )
