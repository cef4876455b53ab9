"""`relay queue list|show|retry|release|delete` and `relay history`: the view of the queue."""

from __future__ import annotations

import argparse
from typing import Any

from relay.addresses import InvalidAddress, normalize
from relay.cli._args import command, group, positive_int
from relay.cli._context import Context
from relay.cli._output import cell, emit, emit_one, print_json, print_table, warn
from relay.errors import ConfigError
from relay.model import FINAL_STATES, DeliveryState
from relay.store import queue as store

EXIT_USAGE = 2
FINAL = {s.value for s in FINAL_STATES}
LIST_COLUMNS = [
    "id",
    "message_id",
    "tenant",
    "campaign",
    "recipient",
    "state",
    "attempts",
    "next_attempt_at",
    "last_reply",
]


def register(sub: Any) -> None:
    q = group(sub, "queue", "inspect and act on the delivery queue (like mailq/postsuper)")
    p = command(q, "list", queue_list, "list deliveries still in the queue", json=True)
    p.add_argument(
        "--state",
        choices=[s.value for s in DeliveryState],
        help="only this state (default: every state that is not final)",
    )
    p.add_argument("--domain", help="only recipients at this domain")
    p.add_argument("--campaign", help="only this campaign (its X-Campaign-ID)")
    p.add_argument("--tenant", help="only this tenant")
    p.add_argument(
        "--limit", type=positive_int, default=100, help="at most this many rows (default 100)"
    )
    p = command(
        q, "show", queue_show, "show a message, its deliveries and every attempt", json=True
    )
    p.add_argument("id", type=int, help="the message id")
    p = command(q, "retry", queue_retry, "make deferred or failed deliveries due now", json=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?", help="the message id")
    which.add_argument("--all-deferred", action="store_true", help="every deferred delivery")
    p.add_argument(
        "--no-suppression",
        action="store_true",
        help="one-off resend: also suppressed and bounced deliveries, sent even though the "
        "address is on the suppression list (which stays as it is)",
    )
    p.add_argument(
        "--recipient",
        action="append",
        default=[],
        metavar="EMAIL",
        help="only the delivery to this address (repeatable)",
    )
    p = command(
        q,
        "release",
        queue_release,
        "send held deliveries (tenant or credential on hold): one message or in bulk",
        json=True,
    )
    p.add_argument("id", type=int, nargs="?", help="the message id")
    p.add_argument("--tenant", help="every held delivery of this tenant")
    p.add_argument("--credential", help="every held delivery sent with this SMTP login")
    p = command(
        q,
        "delete",
        queue_delete,
        "cancel a message's unsent deliveries (kept for history, state cancelled)",
        json=True,
    )
    p.add_argument("id", type=int, help="the message id")

    p = command(sub, "history", history, "per-recipient states, times and replies", json=True)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--campaign", help="every recipient of this campaign")
    who.add_argument("--email", help="every delivery to this address")
    p.add_argument("--tenant", help="only this tenant")
    p.add_argument(
        "--limit", type=positive_int, default=1000, help="at most this many rows (default 1000)"
    )


async def queue_list(args: argparse.Namespace, ctx: Context) -> int:
    f = store.QueueFilter(
        state=args.state,
        domain=args.domain,
        campaign=args.campaign,
        tenant=args.tenant,
        limit=args.limit,
    )
    async with ctx.database() as db:
        rows = await store.list_deliveries(db, f)
    emit(rows, LIST_COLUMNS, args.json)
    _note_limit(rows, args.limit)
    return 0


def _note_limit(rows: list[dict[str, Any]], limit: int) -> None:
    if len(rows) >= limit:  # on stderr, so that --json output stays one document
        warn(f"relay: showing the first {limit} deliveries; --limit N shows more")


async def queue_show(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database() as db:
        msg = await store.show_message(db, args.id)
    if args.json:
        print_json(msg)
        return 0
    for key in (
        "id",
        "tenant",
        "campaign",
        "message_id_header",
        "mail_from",
        "from_header",
        "subject",
        "size",
        "received_at",
        "pruned_at",
    ):
        print(f"{key}: {cell(msg[key])}")
    for d in msg["deliveries"]:
        when = (
            f"finished {cell(d['updated_at'])}"
            if d["state"] in FINAL
            else f"next attempt {cell(d['next_attempt_at'])}"
        )
        print(
            f"\ndelivery {d['id']} to {d['recipient']} ({d['rcpt_type']}): {d['state']}, "
            f"{d['attempts']} attempt(s), {when}"
        )
        print_table(
            d["attempt_log"],
            ["started_at", "transport", "account", "remote_host", "reply_code", "reply", "result"],
        )
    return 0


async def queue_retry(args: argparse.Namespace, ctx: Context) -> int:
    if args.all_deferred and (args.no_suppression or args.recipient):
        warn("relay queue retry: --no-suppression and --recipient need a message id")
        return EXIT_USAGE
    keys = []
    for address in args.recipient:
        try:
            keys.append(normalize(address).key)
        except InvalidAddress as e:
            warn(f"relay queue retry: --recipient {address!r}: {e}")
            return EXIT_USAGE
    async with ctx.database() as db:
        count = await store.retry(
            db,
            args.id,
            all_deferred=args.all_deferred,
            no_suppression=args.no_suppression,
            recipients=keys,
        )
    line, result = f"{count} delivery(ies) due now", {"requeued": count}
    if args.no_suppression:
        line += ", bypassing the suppression list"
        result["no_suppression"] = True
    emit_one(result, args.json, [line])
    return 0


async def queue_release(args: argparse.Namespace, ctx: Context) -> int:
    if args.id is None and args.tenant is None and args.credential is None:
        raise ConfigError("queue release", "give a message id, --tenant or --credential")
    async with ctx.database() as db:
        count = await store.release_held(db, args.id, args.tenant, args.credential)
    emit_one(
        {"released": count},
        args.json,
        [f"{count} held delivery(ies) released (due now, or at their scheduled or retry time)"],
    )
    return 0


async def queue_delete(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database() as db:
        cancelled, busy = await store.cancel_message(db, args.id)
    lines = [f"message {args.id}: {cancelled} delivery(ies) cancelled"]
    if busy:
        lines.append(f"{busy} delivery(ies) are being sent right now and were left alone")
    emit_one({"cancelled": cancelled, "in_flight": busy}, args.json, lines)
    return 0


async def history(args: argparse.Namespace, ctx: Context) -> int:
    f = store.QueueFilter(
        state=None, campaign=args.campaign, email=args.email, tenant=args.tenant, limit=args.limit
    )
    async with ctx.database() as db:
        rows = await store.history(db, f)
    emit(
        rows,
        [
            "id",
            "message_id",
            "campaign",
            "recipient",
            "state",
            "attempts",
            "updated_at",
            "last_reply",
        ],
        args.json,
    )
    _note_limit(rows, args.limit)
    return 0
