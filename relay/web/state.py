"""What the web handlers share: config, database, keyring, event buffer, caches.

Input: built once by `create_app`. Output: `WebState` on `app.state.relay`. The LRU caches
keep click targets and delivery → message pairs so a redirect rarely waits on the database.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from starlette.requests import Request

from relay.config import Config
from relay.intake import Intake
from relay.passwords import VerifyCache
from relay.render.tokens import Keyring
from relay.store.db import Database, utcnow
from relay.web.events import EventBuffer

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        if self.max_entries <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)


@dataclass
class WebState:
    config: Config
    db: Database
    keyring: Keyring
    buffer: EventBuffer
    intake: Intake
    clock: Callable[[], datetime] = utcnow
    verify_cache: VerifyCache = field(default_factory=VerifyCache)
    links: Lru[int, tuple[int, int, str]] = field(default_factory=lambda: Lru(100_000))
    delivery_messages: Lru[int, int] = field(default_factory=lambda: Lru(100_000))


def state_of(request: Request) -> WebState:
    state: WebState = request.app.state.relay
    return state
