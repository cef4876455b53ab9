"""Every reason the outcome path records is one of sisimai's reason names, and a policy or
reputation block never counts toward the recipient's soft-bounce escalation but is charged
to the sending account.

A table of replies through `outcome.classify`, then real replies from a scripted SMTP peer on
loopback through the scheduler, the pool and the outcome writer (SQLite and MariaDB).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from relay.bounce.codes import POLICY_REASONS
from relay.model import BounceKind, SmtpReply
from relay.outcome import classify
from relay.store import accounts
from relay.store.db import Database, utcnow
from relay.store.tables import deliveries, recipient_events
from tests import rows
from tests.peers import RecordingServer
from tests.test_outcome_bounces import _config, _run, _send_each, _suppressed

# sisimai's reason names (../shared/bounces/README.md), plus "expired" kept by max_age.
SISIMAI_REASONS = frozenset(
    "userunknown hostunknown hasmoved mailboxfull suspend expired filtered rejected blocked "
    "policyviolation spamdetected virusdetected authfailure requireptr notaccept norelaying "
    "securityerror networkerror systemerror systemfull mailererror mesgtoobig exceedlimit "
    "toomanyconn speeding badreputation contenterror syntaxerror notcompliantrfc onhold "
    "failedstarttls feedback vacation delivered undefined".split()
)

HARD, SOFT = BounceKind.HARD, BounceKind.SOFT


@pytest.mark.parametrize(
    ("code", "enhanced", "text", "kind", "reason"),
    [
        # The address is bad, whatever the class of the status code: hard.
        (550, "5.1.1", "No such user", HARD, "userunknown"),
        (554, "5.7.1", "<a@example.com>: Recipient address rejected: user does not exist",
         HARD, "userunknown"),
        (550, "5.7.27", "Domain does not accept mail (null MX)", HARD, "notaccept"),
        (550, None, "user unknown", HARD, "userunknown"),
        # A block aimed at the sender (policy, spam, reputation, authentication): soft, and
        # the text wins over a 5.1.1 that would otherwise condemn the address.
        (550, "5.7.1", "Message rejected as spam", SOFT, "spamdetected"),
        (554, "5.7.1", "Service unavailable; Client host [192.0.2.1] blocked using "
         "zen.spamhaus.org", SOFT, "blocked"),
        (550, "5.7.26", "Unauthenticated email is not accepted due to domain's DMARC policy",
         SOFT, "authfailure"),
        (550, "5.1.1", "user unknown; blocked by policy", SOFT, "blocked"),
        (550, "5.1.1", "Recipient rejected: poor sender reputation", SOFT, "badreputation"),
        (550, None, "5.7.1 policy: user unknown", SOFT, "policyviolation"),
        (553, "5.7.1", "Sender address rejected: not owned by user", SOFT, "rejected"),
        # Temporary trouble: a sisimai reason (None: whichever), never a made-up "temporary".
        (451, "4.7.1", "Greylisted, try again later", SOFT, None),
        (421, "4.7.0", "Try again later, closing connection", SOFT, None),
        (451, "4.4.1", "cannot connect", SOFT, "networkerror"),
        (452, "4.2.2", "Mailbox full", SOFT, "mailboxfull"),
        (250, "2.0.0", "OK", BounceKind.NOT_BOUNCE, "delivered"),
    ],
)  # fmt: skip
def test_classify_uses_sisimai_reasons(
    code: int, enhanced: str | None, text: str, kind: BounceKind, reason: str | None
) -> None:
    found = classify(SmtpReply(code, text, enhanced))
    assert (found.kind, found.reason) == (kind, reason or found.reason)
    assert found.reason in SISIMAI_REASONS
    if kind is SOFT and code >= 500 and reason != "mailboxfull":
        assert found.reason in POLICY_REASONS  # charged to the account, never escalates


REPLIES = {
    "gone@example.com": "554 5.7.1 <gone@example.com>: Recipient address rejected: user does "
    "not exist",
    "spam@example.com": "550 5.7.1 Message rejected as spam",
    "listed@example.com": "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked "
    "using zen.spamhaus.org",
    "dmarc@example.com": "550 5.7.26 Unauthenticated email is not accepted due to domain's "
    "DMARC policy",
    "full@example.com": "552 5.2.2 Mailbox full",
}


async def test_policy_blocks_charge_the_account_and_never_escalate(db: Database) -> None:
    tenant = await rows.tenant(db)
    async with RecordingServer() as mx:
        for address, reply in REPLIES.items():
            mx.script_rcpt(address, reply)
        config = _config(mx.port, soft_bounce_limit=2, soft_bounce_ttl=86400.0)
        for _ in range(2):  # two messages: two failures each, the escalation limit
            await _send_each(db, tenant, *REPLIES, "ok@example.com")
            await _run(config, db)
    assert [m.rcpt_tos for m in mx.messages] == [["ok@example.com"]] * 2

    # The mailbox-full recipient escalates (so escalation is on); the blocked ones do not.
    found = await _suppressed(db, tenant)
    assert {email: reason for email, (reason, _) in found.items()} == {
        "gone@example.com": "hard_bounce",  # the address is bad: at the first reply
        "full@example.com": "soft_bounce",
    }
    async with db.read() as conn:
        done = list(
            await conn.execute(
                select(
                    deliveries.c.recipient,
                    deliveries.c.state,
                    deliveries.c.bounce_kind,
                    deliveries.c.bounce_reason,
                )
            )
        )
        events = list(
            await conn.execute(
                # a `suppressed` event names the suppression list's reason, not a bounce's
                select(recipient_events.c.detail).where(recipient_events.c.type != "suppressed")
            )
        )
    by_recipient = {(r.recipient, r.state, r.bounce_kind, r.bounce_reason) for r in done}
    ignored = {
        ("gone@example.com", "suppressed", None, None),
        ("ok@example.com", "delivered", None, None),
    }
    assert by_recipient - ignored == {
        ("gone@example.com", "bounced", "hard", "userunknown"),
        ("spam@example.com", "failed", "soft", "spamdetected"),
        ("listed@example.com", "failed", "soft", "blocked"),
        ("dmarc@example.com", "failed", "soft", "authfailure"),
        ("full@example.com", "failed", "soft", "mailboxfull"),
    }
    recorded = {e.detail["reason"] for e in events}
    assert recorded and recorded <= SISIMAI_REASONS
    assert ("gone@example.com", "suppressed", None, None) in by_recipient  # the second time
    (row,) = await accounts.read_all(db, utcnow())
    # Charged to acct0: the hard bounce and the 6 policy blocks (with the 2 delivered, the
    # window's sends); the full mailbox is the recipient's trouble, not the account's.
    assert (row.window_sent, row.window_bounced) == (9, 7)


async def test_failures_recorded_as_policy_by_older_versions_do_not_escalate(
    db: Database,
) -> None:
    tenant = await rows.tenant(db)
    old = await rows.message(db, tenant)
    for _ in range(2):  # two blocks recorded with the old, non-sisimai reason
        delivery_id = await rows.delivery(db, old, "was-blocked@example.com", state="failed")
        async with db.write() as conn:
            await conn.execute(
                recipient_events.insert().values(
                    tenant_id=tenant,
                    delivery_id=delivery_id,
                    message_id=old,
                    recipient="was-blocked@example.com",
                    type="failed",
                    occurred_at=utcnow() - timedelta(hours=1),
                    detail={"kind": "soft", "reason": "policy", "code": 554},
                )
            )
    async with RecordingServer() as mx:
        mx.script_rcpt("was-blocked@example.com", "552 5.2.2 Mailbox full")
        await _send_each(db, tenant, "was-blocked@example.com")
        await _run(_config(mx.port, soft_bounce_limit=2), db)
    assert await _suppressed(db, tenant) == {}  # one failure of its own, below the limit
