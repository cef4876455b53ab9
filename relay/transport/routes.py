"""Transport per tenant and per sender domain: `[[delivery.routes]]`, the first match wins.

Input: a delivery (its tenant and envelope sender) and the routes; tenant names arrive from
the scheduler (`bind_tenants`), since transports never read the store. Output: the Outcome of
the chosen transport (sink, direct, or the smarthost pool named by the route); deliveries no
route matches use `delivery.mode` (its smarthost pool is 'default').
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from relay.config import Config, RouteConfig
from relay.model import Delivery, Outcome

Build = Callable[[Config], Any]  # the scheduler's builder of one plain transport


class Router:
    name = "router"

    def __init__(self, default: Any, routes: list[tuple[RouteConfig, Any]]) -> None:
        self.default = default
        self.routes = routes
        self.tenant_names: Mapping[int, str] = {}

    @classmethod
    def build(cls, config: Config, build_one: Build) -> Router:
        made: dict[tuple[str, str], Any] = {}

        def one(mode: str, pool: str) -> Any:
            key = (mode, pool if mode == "smarthost" else "")
            if key not in made:
                d = config.delivery
                accounts = [a for a in d.accounts if a.pool == pool]
                made[key] = build_one(
                    config.model_copy(
                        update={
                            "delivery": d.model_copy(update={"mode": mode, "accounts": accounts})
                        }
                    )
                )
            return made[key]

        default = one(config.delivery.mode, "default")
        return cls(default, [(r, one(r.transport, r.pool)) for r in config.delivery.routes])

    @property
    def pools(self) -> list[Any]:
        """Every distinct transport (the scheduler syncs the smarthost pools among them)."""
        found = [self.default] + [t for _, t in self.routes]
        return list({id(t): t for t in found}.values())

    def bind_tenants(self, names: Mapping[int, str]) -> None:
        self.tenant_names = names

    def pick(self, delivery: Delivery) -> Any:
        tenant = self.tenant_names.get(delivery.tenant_id, "")
        sender_domain = delivery.mail_from.rpartition("@")[2].lower()
        for route, transport in self.routes:
            if route.tenant and route.tenant != tenant:
                continue
            if route.sender_domain and route.sender_domain.lower() != sender_domain:
                continue
            return transport
        return self.default

    async def send(self, delivery: Delivery, mail_from: str, data: bytes) -> Outcome:
        return await self.pick(delivery).send(delivery, mail_from, data)  # type: ignore[no-any-return]

    async def close(self) -> None:
        for transport in self.pools:
            await transport.close()
