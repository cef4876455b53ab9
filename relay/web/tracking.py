"""The tracking endpoints mail clients hit: click redirect and unsubscribe (the open pixel
is relay.web.pixel, in front of the router).

Input: signed tokens (relay.render.tokens); a bad token is refused without a database
lookup. Output: a 302 to the stored URL, or the unsubscribe pages. Opens and clicks go to
the event buffer (never awaiting a write); a click reads its URL, from a cache or by one
primary-key query; an unsubscribe is written at once, because losing one is not acceptable.
"""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from relay.model import EventType
from relay.render.tokens import InvalidToken, TokenData, TokenKind
from relay.store import events as store_events
from relay.store import suppressions
from relay.web.machine import is_machine, privacy_ip
from relay.web.state import WebState, state_of

NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache"}


def _client(request: Request, state: WebState) -> tuple[str | None, str | None, bool]:
    """(stored ip, user agent, machine?) of a tracking hit."""
    ip = request.client.host if request.client else None
    agent = request.headers.get("user-agent")
    machine = is_machine(agent, ip, request.method)
    return privacy_ip(ip, state.config.http.store_ip), agent, machine


def _not_found_page() -> Response:
    return PlainTextResponse("This link is not valid.\n", status_code=404, headers=NO_STORE)


async def _click_target(state: WebState, data: TokenData) -> tuple[int, str] | None:
    """(link position, url) if the token's link belongs to its delivery's message.

    The one tracking read of the database: the redirect needs the URL. Both halves are
    cached (http.link_cache_size); a miss costs one query by primary keys."""
    link = state.links.get(data.link_id)
    message_id = state.delivery_messages.get(data.delivery_id)
    if link is None or message_id is None:
        async with state.db.read() as conn:
            if link is None and message_id is None:
                link = await store_events.click_target(conn, data.link_id, data.delivery_id)
                message_id = link[0] if link is not None else None
            elif link is None:
                link = await store_events.link_target(conn, data.link_id)
            else:
                message_id = await store_events.delivery_message(conn, data.delivery_id)
        if link is not None:
            state.links.put(data.link_id, link)
        if message_id is not None:
            state.delivery_messages.put(data.delivery_id, message_id)
    if link is None or message_id is None or link[0] != message_id:
        return None
    return link[1], link[2]


async def track_click(request: Request) -> Response:
    state = state_of(request)
    try:
        data = state.keyring.verify(request.path_params["token"], TokenKind.CLICK)
    except InvalidToken:
        return _not_found_page()
    target = await _click_target(state, data)
    if target is None:
        return _not_found_page()
    position, url = target
    if state.config.tracking.clicks:
        ip, agent, machine = _client(request, state)
        state.buffer.add(
            store_events.TrackEvent(
                EventType.CLICKED.value,
                data.delivery_id,
                state.clock(),
                machine,
                link_id=data.link_id,
                link_position=position,
                url=url,
                ip=ip,
                user_agent=agent,
            )
        )
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;
line-height:1.5;color:#111;background:#fff}}button{{font-size:1rem;padding:.6rem 1.2rem;
border:2px solid #111;background:#111;color:#fff;border-radius:.3rem;cursor:pointer}}
button:focus{{outline:3px solid #06c;outline-offset:2px}}</style></head>
<body><main><h1>{title}</h1>{body}</main></body></html>
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), body=body), status_code=status, headers=NO_STORE
    )


async def unsubscribe_page(request: Request) -> Response:
    """The confirmation page. A GET never unsubscribes: link scanners fetch every URL."""
    state = state_of(request)
    token = request.path_params["token"]
    try:
        state.keyring.verify(token, TokenKind.UNSUBSCRIBE)
    except InvalidToken:
        return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
    body = (
        "<p>Do you want to stop receiving these emails?</p>"
        f'<form method="post" action="/unsubscribe/{html.escape(token)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe", body)


async def unsubscribe(request: Request) -> Response:
    """One click (RFC 8058 body `List-Unsubscribe=One-Click`) or the page's button."""
    state = state_of(request)
    try:
        data = state.keyring.verify(request.path_params["token"], TokenKind.UNSUBSCRIBE)
    except InvalidToken:
        return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
    ip, agent, _machine = _client(request, state)
    async with state.db.write() as conn:
        owner = await store_events.delivery_owner(conn, data.delivery_id)
        if owner is None:
            return _page("Link expired", "<p>This unsubscribe link has expired.</p>", 404)
        lifetime = suppressions.expiry(state.config.bounce.ttl_s("unsubscribe"), state.clock())
        await store_events.record_unsubscribe(conn, owner, state.clock(), ip, agent, lifetime)
    return _page(
        "Unsubscribed", "<p>You have been unsubscribed. You will not get these emails any more.</p>"
    )


ROUTES = [
    Route("/track/click/{token}", track_click, methods=["GET", "HEAD"]),
    Route("/unsubscribe/{token}", unsubscribe_page, methods=["GET"]),
    Route("/unsubscribe/{token}", unsubscribe, methods=["POST"]),
]
