"""`relay queue list|show|retry|release|delete` and `relay history`: the view of the queue."""

from __future__ import annotations

import argparse
from typing import Any

from relay.cli._args import command, group
from relay.cli._context import Context
from relay.cli._output import emit, emit_one, print_json, print_table
from relay.errors import ConfigError
from relay.model import DeliveryState
from relay.store import queue as store

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
    p.add_argument("--limit", type=int, default=100, help="at most this many rows (default 100)")
    p = command(
        q, "show", queue_show, "show a message, its deliveries and every attempt", json=True
    )
    p.add_argument("id", type=int, help="the message id")
    p = command(q, "retry", queue_retry, "make deferred or failed deliveries due now", json=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?", help="the message id")
    which.add_argument("--all-deferred", action="store_true", help="every deferred delivery")
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
    p.add_argument("--limit", type=int, default=1000, help="at most this many rows")


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
    return 0


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
    ):
        print(f"{key}: {msg[key] if msg[key] is not None else '-'}")
    for d in msg["deliveries"]:
        print(
            f"\ndelivery {d['id']} to {d['recipient']} ({d['rcpt_type']}): {d['state']}, "
            f"{d['attempts']} attempt(s), next {d['next_attempt_at']}"
        )
        print_table(
            d["attempt_log"],
            ["started_at", "transport", "account", "remote_host", "reply_code", "reply", "result"],
        )
    return 0


async def queue_retry(args: argparse.Namespace, ctx: Context) -> int:
    async with ctx.database() as db:
        count = await store.retry(db, args.id, all_deferred=args.all_deferred)
    emit_one({"requeued": count}, args.json, [f"{count} delivery(ies) due now"])
    return 0


async def queue_release(args: argparse.Namespace, ctx: Context) -> int:
    if args.id is None and args.tenant is None and args.credential is None:
        raise ConfigError("queue release", "give a message id, --tenant or --credential")
    async with ctx.database() as db:
        count = await store.release_held(db, args.id, args.tenant, args.credential)
    emit_one({"released": count}, args.json, [f"{count} held delivery(ies) released, due now"])
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
    return 0
