"""Which store errors mean "the database is unavailable, try again", not a bug.

Output: UNAVAILABLE, the driver exception classes an edge translates (web → 503) without
importing SQLAlchemy itself: connection refused or lost, pool timeouts, and the transient
OperationalErrors (MySQL deadlock or lock wait timeout, SQLite "database is locked").
Integrity and programming errors are bugs and stay out.
"""

from __future__ import annotations

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout)
