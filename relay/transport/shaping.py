"""Traffic shaping per destination for direct delivery (Postfix qmgr's per-destination queues).

Input: the MX host set of a recipient domain, the attempt's result, `[delivery]` shaping
config. Output: whether an attempt may go now (holding a connection slot), must wait in the
queue (`Postponed`, no attempt counted), or is deferred because the site is dead (`Deferred`).
A destination is keyed on its MX hosts, so every domain hosted by one provider shares one
budget: max connections, new connections per minute, messages per second, messages per
connection. Throttle replies (421/4xx "too many connections", rate-limit texts) halve the
budget and pause the destination; each quiet `throttle_recovery` restores one step. After
`dead_after_failures` attempts in a row that reached no MX host, the destination is dead for
`dead_time`. State is per process (each delivery node shapes its own traffic).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from relay import log
from relay.bounce.classify import classify_reply
from relay.config import DeliveryConfig, ShapeConfig
from relay.model import SmtpReply

logger = log.get(__name__)

# A transient "badreputation" is a provider's rate limit for a sender it trusts less
# (Outlook.com RP-001, Microsoft 4.7.650): slowing down is the answer, as for "speeding".
THROTTLE_REASONS = frozenset({"toomanyconn", "speeding", "badreputation"})
MAX_LEVEL = 6  # at most 1/64 of the budget while throttled
MAX_PAUSE_S = 3600.0


@dataclass(frozen=True, slots=True)
class Shape:
    """A destination's budget; 0 means unlimited (messages_per_connection: the global cap)."""

    max_connections: int = 0
    connections_per_minute: int = 0
    messages_per_second: float = 0.0
    messages_per_connection: int = 0


# Shipped defaults for the big providers, recognised by the ending of their MX host names.
# Conservative values in line with the providers' published guidance for bulk senders.
PROVIDERS: dict[str, tuple[tuple[str, ...], Shape]] = {
    "gmail": (("google.com", "googlemail.com"), Shape(20, 120, 20.0, 100)),
    "outlook": (("outlook.com", "hotmail.com"), Shape(10, 60, 10.0, 50)),
    "yahoo": (("yahoodns.net",), Shape(5, 30, 5.0, 20)),
    "icloud": (("icloud.com", "me.com"), Shape(5, 30, 5.0, 50)),
}
DEFAULT = Shape(max_connections=20)  # any other destination


def shapes(config: DeliveryConfig) -> tuple[dict[str, tuple[tuple[str, ...], Shape]], Shape]:
    """The shipped providers with `[delivery.shaping.NAME]` applied (NAME 'default' = others)."""
    providers = dict(PROVIDERS)
    default = DEFAULT
    for name, override in config.shaping.items():
        if name == "default":
            default = _merge(default, override)
            continue
        suffixes, base = providers.get(name, ((), Shape()))
        found = tuple(s.lower().strip(".") for s in override.mx_suffixes) or suffixes
        providers[name] = (found, _merge(base, override))
    return providers, default


def _merge(base: Shape, override: ShapeConfig) -> Shape:
    given = override.model_dump(exclude_unset=True, exclude={"mx_suffixes"})
    return replace(base, **given)


@dataclass(frozen=True, slots=True)
class Postponed:
    """Not now: back to the queue for `wait_s`, no attempt counted."""

    wait_s: float
    why: str


@dataclass(frozen=True, slots=True)
class Deferred:
    """The destination is dead: defer (an attempt) with this reply."""

    wait_s: float
    reply: SmtpReply


@dataclass
class Destination:
    key: str
    shape: Shape
    active: int = 0
    opened: deque[float] = field(default_factory=deque)  # connection start times, last minute
    next_slot: float = 0.0  # messages-per-second timeline
    reserved: dict[int, float] = field(default_factory=dict)  # delivery id → its slot
    level: int = 0  # throttle back-off: budget divided by 2**level
    calm_since: float = 0.0  # last throttle or recovery step
    paused_until: float = 0.0
    failures: int = 0  # attempts in a row that reached no MX host
    dead_until: float = 0.0
    dead_reply: SmtpReply | None = None
    freed: asyncio.Event = field(default_factory=asyncio.Event)

    def effective(self) -> Shape:
        """The budget scaled down by the throttle level."""
        if not self.level:
            return self.shape
        f = 2**self.level
        s = self.shape
        return Shape(
            max(1, s.max_connections // f) if s.max_connections else 0,
            max(1, s.connections_per_minute // f) if s.connections_per_minute else 0,
            s.messages_per_second / f if s.messages_per_second else 0.0,
            s.messages_per_connection,
        )


class Shaper:
    def __init__(
        self,
        providers: dict[str, tuple[tuple[str, ...], Shape]],
        default: Shape,
        *,
        max_wait_s: float = 2.0,
        throttle_backoff_s: float = 60.0,
        throttle_recovery_s: float = 300.0,
        dead_after: int = 5,
        dead_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.providers = providers
        self.default = default
        self.max_wait_s = max_wait_s
        self.throttle_backoff_s = throttle_backoff_s
        self.throttle_recovery_s = throttle_recovery_s
        self.dead_after = dead_after
        self.dead_s = dead_s
        self.clock = clock
        self.rng = rng or random.Random()
        self.destinations: dict[str, Destination] = {}

    @classmethod
    def from_config(cls, config: DeliveryConfig) -> Shaper:
        providers, default = shapes(config)
        return cls(
            providers,
            default,
            max_wait_s=config.shaping_max_wait,
            throttle_backoff_s=config.throttle_backoff,
            throttle_recovery_s=config.throttle_recovery,
            dead_after=config.dead_after_failures,
            dead_s=config.dead_time,
        )

    def destination(self, mx_hosts: Iterable[str]) -> Destination:
        """The destination of these MX hosts: a provider's, or one for this exact host set."""
        hosts = sorted({h.lower().rstrip(".") for h in mx_hosts})
        key, shape = "mx:" + ",".join(hosts), self.default
        for name, (suffixes, provider_shape) in self.providers.items():
            if hosts and all(_ends_with(h, suffixes) for h in hosts):
                key, shape = name, provider_shape
                break
        found = self.destinations.get(key)
        if found is None:
            found = self.destinations[key] = Destination(key, shape)
        return found

    async def admit(self, dest: Destination, delivery_id: int) -> Postponed | Deferred | None:
        """Wait (at most max_wait_s) for the destination's budget; None = go, slot taken.

        The caller must `release` after the attempt when this returns None."""
        now = self.clock()
        self._recover(dest, now)
        if dest.dead_until > now and dest.dead_reply is not None:
            return Deferred(dest.dead_until - now, dest.dead_reply)
        if dest.paused_until > now:
            return Postponed(dest.paused_until - now + self._spread(), "destination throttled")
        shape = dest.effective()
        slot = now
        if shape.messages_per_second:
            held = dest.reserved.pop(delivery_id, None)
            slot = held if held is not None else max(now, dest.next_slot)
            dest.next_slot = max(dest.next_slot, slot + 1.0 / shape.messages_per_second)
            if slot - now > self.max_wait_s:
                dest.reserved[delivery_id] = slot  # kept for when it comes back
                self._forget_stale(dest, now)
                return Postponed(slot - now, "destination rate")
        deadline = now + self.max_wait_s
        while True:
            dest.freed.clear()  # before the check, so a release after it is not missed
            if not shape.max_connections or dest.active < shape.max_connections:
                break
            left = deadline - self.clock()
            try:
                async with asyncio.timeout(max(left, 0.0)):
                    await dest.freed.wait()
            except TimeoutError:
                if shape.messages_per_second:
                    dest.reserved[delivery_id] = slot
                return Postponed(1.0 + self._spread(), "destination connections busy")
        dest.active += 1
        wait = slot - self.clock()
        if wait > 0:
            try:
                await asyncio.sleep(wait)
            except BaseException:
                self.release(dest)
                raise
        return None

    def release(self, dest: Destination) -> None:
        dest.active = max(dest.active - 1, 0)
        dest.freed.set()

    def connect_wait(self, dest: Destination) -> float:
        """Seconds until a new connection fits the per-minute budget (0 = now); when 0, the
        connection is counted."""
        limit = dest.effective().connections_per_minute
        now = self.clock()
        while dest.opened and dest.opened[0] <= now - 60.0:
            dest.opened.popleft()
        if limit and len(dest.opened) >= limit:
            return dest.opened[0] + 60.0 - now
        dest.opened.append(now)
        return 0.0

    def report(self, dest: Destination, reply: SmtpReply, reached: bool) -> None:
        """After an attempt: `reached` = some MX host answered at SMTP level."""
        now = self.clock()
        if is_throttle(reply):
            dest.level = min(dest.level + 1, MAX_LEVEL)
            dest.calm_since = now
            pause = min(self.throttle_backoff_s * 2 ** (dest.level - 1), MAX_PAUSE_S)
            dest.paused_until = max(dest.paused_until, now + pause)
            logger.warning(
                "destination.throttled", destination=dest.key, level=dest.level, reply=str(reply)
            )
        if reached:
            dest.failures = 0
            return
        dest.failures += 1
        if dest.failures >= self.dead_after and dest.dead_until <= now:
            dest.dead_until = now + self.dead_s
            dest.dead_reply = SmtpReply(
                451, f"delivery to {dest.key} suspended for now: {reply.text}", "4.4.1"
            )
            logger.warning("destination.dead", destination=dest.key, failures=dest.failures)

    def _recover(self, dest: Destination, now: float) -> None:
        if dest.dead_until and dest.dead_until <= now:
            dest.dead_until, dest.dead_reply = 0.0, None
            dest.failures = self.dead_after - 1  # one more failure and it is dead again
        while dest.level and now - dest.calm_since >= self.throttle_recovery_s:
            dest.level -= 1
            dest.calm_since += self.throttle_recovery_s
            logger.info("destination.recovering", destination=dest.key, level=dest.level)

    def _forget_stale(self, dest: Destination, now: float) -> None:
        # Reservations of deliveries that never came back (leased by another node, say).
        if len(dest.reserved) > 10_000:
            for key in [k for k, at in dest.reserved.items() if at < now - 60.0]:
                del dest.reserved[key]

    def _spread(self) -> float:
        return self.rng.uniform(0.0, 1.0)


def is_throttle(reply: SmtpReply) -> bool:
    """A temporary reply that says we send too much or too fast."""
    return reply.is_transient and classify_reply(reply).reason in THROTTLE_REASONS


def _ends_with(host: str, suffixes: tuple[str, ...]) -> bool:
    return any(host == s or host.endswith("." + s) for s in suffixes)
