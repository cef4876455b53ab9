"""The open pixel as a bare ASGI app in front of Starlette: the hottest endpoint there is.

Input: every ASGI call; `GET|HEAD /track/open/{token}` is answered here, anything else goes
to the wrapped app. Output: the 43-byte GIF with prebuilt headers, and an open event in the
buffer when the token verifies. No routing, middleware, Request or Response objects: the
Starlette path cost ~28 µs a hit, this one a few (bench/README.md, web section).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from relay.model import EventType
from relay.render.tokens import InvalidToken, Keyring, TokenKind
from relay.store.events import TrackEvent
from relay.web.events import EventBuffer
from relay.web.machine import is_machine, privacy_ip

PREFIX = "/track/open/"
# The smallest transparent 1×1 GIF89a: 43 bytes.
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00"
    b"!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_STORE = "no-store, no-cache, must-revalidate, max-age=0"
GIF_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"image/gif"),
        (b"content-length", b"43"),
        (b"cache-control", NO_STORE.encode()),
        (b"pragma", b"no-cache"),
    ],
}
_BODY = {"type": "http.response.body", "body": GIF}
_HEAD_BODY = {"type": "http.response.body", "body": b""}
_NOT_ALLOWED = b'{"error":{"code":"method_not_allowed","message":"Method Not Allowed"}}'
_NOT_ALLOWED_START = {
    "type": "http.response.start",
    "status": 405,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_NOT_ALLOWED)).encode()),
        (b"allow", b"GET, HEAD"),
    ],
}
_NOT_ALLOWED_BODY = {"type": "http.response.body", "body": _NOT_ALLOWED}
_OPENED = EventType.OPENED.value

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]


class PixelFastPath:
    def __init__(
        self,
        app: ASGIApp,
        keyring: Keyring,
        buffer: EventBuffer,
        clock: Callable[[], datetime],
        opens: bool,
        store_ip: str,
    ) -> None:
        self.app = app
        self.keyring = keyring
        self.buffer = buffer
        self.clock = clock
        self.opens = opens
        self.store_ip = store_ip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        method = scope.get("method")
        if scope["type"] != "http" or not path.startswith(PREFIX) or "/" in path[len(PREFIX) :]:
            await self.app(scope, receive, send)
            return
        if method not in ("GET", "HEAD"):
            await send(_NOT_ALLOWED_START)
            await send(_NOT_ALLOWED_BODY)
            return
        if self.opens:
            self._record(scope, path[len(PREFIX) :], method)
        await send(GIF_START)
        await send(_BODY if method == "GET" else _HEAD_BODY)

    def _record(self, scope: Scope, token: str, method: str) -> None:
        try:
            data = self.keyring.verify(token, TokenKind.OPEN)
        except InvalidToken:
            return  # still a pixel: a broken image helps no one
        agent = None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                agent = value.decode("latin-1")
                break
        client = scope.get("client")
        ip = client[0] if client else None
        self.buffer.add(
            TrackEvent(
                _OPENED,
                data.delivery_id,
                self.clock(),
                is_machine(agent, ip, method),
                ip=privacy_ip(ip, self.store_ip),
                user_agent=agent,
            )
        )
