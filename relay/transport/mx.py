"""The `direct` transport: look up the recipient domain's MX hosts and deliver to them.

Input: a delivery and its rendered bytes; `[delivery]` DNS and port settings. Output: an
`Outcome`. MX records come from dnspython (async), cached for their TTL; hosts are tried in
preference order, random among equal preferences; no MX means the domain itself (implicit
MX, RFC 5321 5.1); a null MX (RFC 7505) or a non-existent domain fails at once (hard);
DNS timeouts and SERVFAIL defer. Site trouble at one host moves on to the next. Every
attempt passes the destination's traffic shaping first (`relay.transport.shaping`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from relay.model import WAIT_DETAIL, Delivery, Outcome, SmtpReply
from relay.transport.session import Endpoint, SessionCache
from relay.transport.shaping import DEFAULT, PROVIDERS, Deferred, Destination, Postponed, Shaper
from relay.transport.smarthost import send_one
from relay.transport.trouble import Scope


class DnsFailure(Exception):
    def __init__(self, reply: SmtpReply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class _Cached:
    expires: float
    groups: tuple[tuple[str, ...], ...]  # MX hosts grouped by preference, best first


class MxResolver:
    def __init__(
        self,
        servers: list[str],
        port: int,
        lifetime_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.resolver = dns.asyncresolver.Resolver(configure=not servers)
        if servers:
            self.resolver.nameservers = servers
            self.resolver.port = port
        self.resolver.lifetime = lifetime_s
        self.clock = clock
        self.rng = rng or random.Random()
        self._mx: dict[str, _Cached] = {}
        self._addr: dict[str, tuple[float, tuple[str, ...]]] = {}

    async def hosts(self, domain: str) -> list[str]:
        """MX host names to try, in order (equal preferences shuffled each call)."""
        domain = domain.lower().rstrip(".")
        cached = self._mx.get(domain)
        if cached is None or cached.expires <= self.clock():
            cached = await self._lookup_mx(domain)
            self._mx[domain] = cached
        order: list[str] = []
        for group in cached.groups:
            shuffled = list(group)
            self.rng.shuffle(shuffled)
            order += shuffled
        return order

    async def _lookup_mx(self, domain: str) -> _Cached:
        try:
            answer = await self.resolver.resolve(domain, "MX")
        except dns.resolver.NXDOMAIN:
            raise DnsFailure(SmtpReply(550, f"domain {domain} does not exist", "5.1.2")) from None
        except dns.resolver.NoAnswer:
            # Implicit MX: the domain itself, if it has an address.
            await self.addresses(domain)
            return _Cached(self.clock() + 300, ((domain,),))
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as e:
            raise DnsFailure(
                SmtpReply(451, f"DNS lookup for {domain} failed: {e}", "4.4.3")
            ) from None
        records = sorted(answer, key=lambda r: r.preference)
        names = [str(r.exchange).rstrip(".").lower() for r in records]
        if len(records) == 1 and names[0] == "" and records[0].preference == 0:
            reply = SmtpReply(556, f"domain {domain} does not accept mail (null MX)", "5.1.10")
            raise DnsFailure(reply)
        groups: dict[int, list[str]] = {}
        for record, name in zip(records, names, strict=True):
            if name:
                groups.setdefault(record.preference, []).append(name)
        ttl = answer.rrset.ttl if answer.rrset is not None else 300
        return _Cached(self.clock() + ttl, tuple(tuple(groups[p]) for p in sorted(groups)))

    async def addresses(self, host: str) -> tuple[str, ...]:
        cached = self._addr.get(host)
        if cached and cached[0] > self.clock():
            return cached[1]
        found: list[str] = []
        ttl = 300
        temporary = False
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self.resolver.resolve(host, rdtype)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except (dns.resolver.NoNameservers, dns.exception.Timeout):
                temporary = True
                continue
            found += [r.address for r in answer]
            ttl = min(ttl, answer.rrset.ttl if answer.rrset is not None else ttl)
        if not found:
            if temporary:
                raise DnsFailure(SmtpReply(451, f"DNS lookup for {host} failed", "4.4.3"))
            raise DnsFailure(SmtpReply(550, f"{host} has no address", "5.1.2"))
        self._addr[host] = (self.clock() + ttl, tuple(found))
        return tuple(found)


class DirectTransport:
    name = "direct"

    def __init__(
        self,
        resolver: MxResolver,
        cache: SessionCache,
        port: int = 25,
        shaper: Shaper | None = None,
    ) -> None:
        self.resolver = resolver
        self.cache = cache
        self.port = port
        self.shaper = shaper or Shaper(PROVIDERS, DEFAULT)

    async def send(self, delivery: Delivery, mail_from: str, data: bytes) -> Outcome:
        started = time.monotonic()
        try:
            hosts = await self.resolver.hosts(delivery.domain)
        except DnsFailure as e:
            ms = int((time.monotonic() - started) * 1000)
            return Outcome(delivery.id, False, e.reply, self.name, duration_ms=ms)
        dest = self.shaper.destination(hosts)
        verdict = await self.shaper.admit(dest, delivery.id)
        if isinstance(verdict, Postponed):
            return self._postponed(delivery, dest, verdict)
        if isinstance(verdict, Deferred):
            return Outcome(
                delivery.id, False, verdict.reply, self.name, retry_after_s=verdict.wait_s
            )
        try:
            outcome, reached = await self._try_hosts(delivery, mail_from, data, hosts, dest)
        finally:
            self.shaper.release(dest)
        if WAIT_DETAIL not in outcome.details:
            self.shaper.report(dest, outcome.reply, reached)
        return outcome

    async def _try_hosts(
        self, delivery: Delivery, mail_from: str, data: bytes, hosts: list[str], dest: Destination
    ) -> tuple[Outcome, bool]:
        """Every MX in order; (outcome, whether any host answered at SMTP level)."""
        last: Outcome | None = None
        reached = False
        cap = dest.shape.messages_per_connection
        for host in hosts:
            try:
                addresses = await self.resolver.addresses(host)
            except DnsFailure as e:
                last = Outcome(delivery.id, False, e.reply, self.name, remote_host=host)
                continue
            for address in addresses:
                endpoint = Endpoint(address, self.port, "opportunistic")
                if cap:
                    self.cache.caps[endpoint] = cap
                if not self.cache.has_idle(endpoint):
                    wait = await self._connection_budget(dest)
                    if wait is not None:
                        return self._postponed(delivery, dest, wait), True
                outcome, found = await send_one(
                    self.cache, endpoint, delivery, mail_from, data, self.name, None
                )
                outcome = Outcome(
                    outcome.delivery_id,
                    outcome.delivered,
                    outcome.reply,
                    self.name,
                    remote_host=host,
                    duration_ms=outcome.duration_ms,
                    retry_after_s=outcome.retry_after_s,
                )
                if found is None or found.scope is not Scope.SITE:
                    return outcome, True
                reached = reached or found.reply.enhanced not in _UNREACHABLE
                last = outcome  # soft trouble at a non-final MX: try the next
        if last is None:
            reply = SmtpReply(451, "no MX host to try", "4.4.4")
            last = Outcome(delivery.id, False, reply, self.name)
        # Every MX failed: whatever the last said, it is temporary (4xx) unless it was DNS-hard.
        return last, reached

    async def _connection_budget(self, dest: Destination) -> Postponed | None:
        """Wait for room under connections_per_minute, or say how long it would take."""
        while (wait := self.shaper.connect_wait(dest)) > 0:
            if wait > self.shaper.max_wait_s:
                return Postponed(wait, "destination connection rate")
            await asyncio.sleep(wait)
        return None

    def _postponed(self, delivery: Delivery, dest: Destination, verdict: Postponed) -> Outcome:
        reply = SmtpReply(451, f"waiting for {dest.key}: {verdict.why}", "4.4.5")
        return Outcome(
            delivery.id,
            False,
            reply,
            self.name,
            retry_after_s=verdict.wait_s,
            details={WAIT_DETAIL: verdict.why},
        )

    async def close(self) -> None:
        await self.cache.close()


# Synthetic replies of connection trouble (relay.transport.trouble): no MX host answered.
_UNREACHABLE = frozenset({"4.4.1", "4.4.2"})
