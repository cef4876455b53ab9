"""The scheduler's bridge to render/: per-delivery rendering with the message's stored inputs.

Input: a leased `Delivery` and its stored original. Loads the message's tracked links and
tracking settings once (LRU by message id: every recipient of a message shares them; one
query per message even when its recipients are rendered concurrently), builds
a `RenderJob` and renders it, in a thread when DKIM signing makes it CPU-heavy. Output: the
envelope sender (VERP) and the exact bytes for DATA.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from relay.config import Config
from relay.model import Delivery
from relay.render import Renderer, RenderJob, tracking_flags
from relay.store.db import Database
from relay.store.messages import RenderInputs, render_inputs

CACHE_SIZE = 1024


class DeliveryRenderer:
    def __init__(self, config: Config, db: Database, renderer: Renderer | None = None) -> None:
        self.config = config
        self.db = db
        self.renderer = renderer or Renderer.from_config(config)
        self.in_thread = bool(config.dkim.keys)
        # Tasks, so concurrent renders of one message share a single load; a caller being
        # cancelled does not cancel the load others wait on.
        self._inputs: OrderedDict[int, asyncio.Future[RenderInputs]] = OrderedDict()

    def prime(self, found: dict[int, RenderInputs]) -> None:
        """Cache inputs the scheduler loaded for a whole batch (no query per message)."""
        loop = asyncio.get_running_loop()
        for message_id, inputs in found.items():
            if message_id in self._inputs:
                continue
            done: asyncio.Future[RenderInputs] = loop.create_future()
            done.set_result(inputs)
            self._inputs[message_id] = done
            if len(self._inputs) > CACHE_SIZE:
                self._inputs.popitem(last=False)

    async def _inputs_for(self, message_id: int) -> RenderInputs:
        found = self._inputs.get(message_id)
        if found is not None:
            self._inputs.move_to_end(message_id)
            if found.done():
                return found.result()
        else:
            found = asyncio.ensure_future(self._load(message_id))
            self._inputs[message_id] = found
            if len(self._inputs) > CACHE_SIZE:
                self._inputs.popitem(last=False)
        return await asyncio.shield(found)

    async def _load(self, message_id: int) -> RenderInputs:
        try:
            async with self.db.read() as conn:
                return await render_inputs(conn, message_id)
        except BaseException:
            self._inputs.pop(message_id, None)  # not cached: the next render tries again
            raise

    async def __call__(self, delivery: Delivery, raw: bytes) -> tuple[str, bytes]:
        inputs = await self._inputs_for(delivery.message_id)
        opens, clicks = tracking_flags(
            self.config, inputs.tenant_settings, inputs.campaign_settings, inputs.options
        )
        job = RenderJob(
            delivery.id,
            delivery.message_id,
            delivery.recipient,
            delivery.mail_from,
            raw,
            inputs.links,
            opens,
            clicks,
            inputs.plan,
        )
        if self.in_thread:
            rendered = await asyncio.to_thread(self.renderer.render, job)
        else:
            rendered = self.renderer.render(job)
        return rendered.mail_from, rendered.data
