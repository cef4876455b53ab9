"""The errors relay raises on purpose.

Each is translated at one edge only: `ingress` turns them into SMTP replies, `web` into JSON
`{"error": {"code", "message"}}`, `cli` into one line on stderr and an exit code.
"""

from __future__ import annotations


class RelayError(Exception):
    """Base of every error relay raises deliberately (never a bug)."""


class ConfigError(RelayError):
    """A config key has a bad value. The message names the key, the value and what is expected."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"config error: {key}: {problem}")


class SchemaError(RelayError):
    """The database schema is missing, behind or ahead of this code."""


class NotFound(RelayError):
    """A named thing (tenant, message, delivery …) does not exist."""


class Conflict(RelayError):
    """A thing with that unique name already exists."""


class LeaseLost(RelayError):
    """A worker tried to complete a delivery whose lease it no longer holds."""


class StoreUnavailable(RelayError):
    """The database cannot be reached or refused the transaction; callers answer 4xx / 503."""
