"""One SMTP transaction over a reused session: MAIL, RCPT, DATA for one delivery,
pipelined where the server offers it (`relay.transport.pipeline`).

Input: a session cache, an endpoint (smarthost account or MX host), the delivery and its
rendered bytes. Output: an `Outcome`, plus the `Trouble` when it failed so the pool can
tell site trouble (try the next account / MX) from an answer about this recipient.
"""

from __future__ import annotations

import time

import aiosmtplib

from relay.model import Delivery, Outcome, SmtpReply
from relay.transport import pipeline, trouble
from relay.transport.session import Endpoint, SessionCache


async def send_one(
    cache: SessionCache,
    endpoint: Endpoint,
    delivery: Delivery,
    mail_from: str,
    data: bytes,
    transport: str,
    account: str | None,
) -> tuple[Outcome, trouble.Trouble | None]:
    started = time.monotonic()

    def outcome(delivered: bool, reply: SmtpReply) -> Outcome:
        return Outcome(
            delivery.id,
            delivered,
            reply,
            transport,
            account=account,
            remote_host=endpoint.host,
            duration_ms=int((time.monotonic() - started) * 1000),
            retry_after_s=trouble.retry_after_s(reply),
        )

    try:
        session = await cache.acquire(endpoint)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
        found = trouble.from_exception(e)
        return outcome(False, found.reply), found
    ascii_only = mail_from.isascii() and delivery.recipient.isascii()
    try:
        if not ascii_only and session.client.is_ehlo_or_helo_needed:
            await session.client.ehlo(timeout=cache.command_timeout_s)
        if not ascii_only and not session.client.supports_extension("smtputf8"):
            # RFC 6531: a non-ASCII address needs SMTPUTF8; this server cannot take it.
            cache.give_back(endpoint, session, ok=True)
            reply = SmtpReply(553, "the server does not accept non-ASCII addresses", "5.6.7")
            return outcome(False, reply), trouble.Trouble(reply, trouble.Scope.RECIPIENT)
        tx = await pipeline.transact(
            session.client,
            mail_from,
            [delivery.recipient],
            data,
            timeout_s=cache.command_timeout_s,
            mail_options=[] if ascii_only else ["SMTPUTF8"],
        )
    except ValueError:  # an address with control characters: nothing was sent
        cache.give_back(endpoint, session, ok=True)
        reply = SmtpReply(553, "the address cannot be sent in an SMTP command", "5.1.3")
        return outcome(False, reply), trouble.Trouble(reply, trouble.Scope.RECIPIENT)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
        # Lost, timed out, garbled or a 421: the session's state is unknown, drop it.
        cache.discard(session)
        found = trouble.from_exception(e)
        return outcome(False, found.reply), found
    except BaseException:  # cancelled mid-transaction: the session's state is unknown
        cache.discard(session)
        raise
    [(reply, judged)] = trouble.judge(tx)
    if judged is not None and judged.scope is trouble.Scope.SITE:
        cache.discard(session)
    else:
        cache.give_back(endpoint, session, ok=judged is None)
    return outcome(judged is None, reply), judged
