"""A tiny authoritative DNS responder on 127.0.0.1 (UDP, port 0) built on dnspython.

    async with DnsStub({("example.com", "MX"): ["10 mx1.example.com."], ...}) as dns: ...

Records map (name, type) to rdata texts; a name with no records for a type answers NOERROR
with no data; names listed in `nxdomain` answer NXDOMAIN; `servfail` names SERVFAIL.
It counts queries so tests can prove caching.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from types import TracebackType

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, stub: DnsStub) -> None:
        self.stub = stub
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.stub.queries[(name, rdtype)] += 1
        if name in self.stub.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name in self.stub.nxdomain:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            texts = self.stub.records.get((name, rdtype), [])
            if texts:
                rrset = dns.rrset.from_text_list(
                    question.name, self.stub.ttl, dns.rdataclass.IN, question.rdtype, texts
                )
                response.answer.append(rrset)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


class DnsStub:
    def __init__(
        self,
        records: dict[tuple[str, str], list[str]],
        nxdomain: set[str] | None = None,
        servfail: set[str] | None = None,
        ttl: int = 300,
    ) -> None:
        self.records = records
        self.nxdomain = nxdomain or set()
        self.servfail = servfail or set()
        self.ttl = ttl
        self.queries: Counter[tuple[str, str]] = Counter()
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> DnsStub:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._transport is not None
        self._transport.close()
