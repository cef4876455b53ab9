"""Classify one failure: SMTP reply code, RFC 3463 status and text → kind, reason, status.

Pure: input is an `SmtpReply` (synchronous delivery) or a status/diagnostic pair from a DSN;
output is a `Classification`. The rules are data in `relay.bounce.rules`.
"""

from __future__ import annotations

import re
from functools import lru_cache

from relay.bounce import codes, providers, rules
from relay.model import BounceKind, Classification, SmtpReply

STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
CODE_RE = re.compile(r"(?<!\d)([245]\d\d)(?:[ -]|$)")


def _compile(
    table: tuple[tuple[str, tuple[str, ...]], ...],
) -> tuple[tuple[str, re.Pattern[str]], ...]:
    return tuple(
        (reason, re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE))
        for reason, patterns in table
    )


@lru_cache(maxsize=1)
def _compiled() -> tuple[tuple[str, re.Pattern[str]], ...]:
    return _compile(rules.TEXT_RULES)


@lru_cache(maxsize=1)
def _weak() -> tuple[tuple[str, re.Pattern[str]], ...]:
    return _compile(rules.WEAK_TEXT_RULES)


@lru_cache(maxsize=1)
def _directory() -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in providers.DIRECTORY_RULES), re.IGNORECASE)


def find_status(text: str) -> str:
    """The first RFC 3463 code in a text, or ''."""
    m = STATUS_RE.search(text or "")
    return ".".join(m.groups()) if m else ""


COMMAND_RE = re.compile(
    r"\b(?:after|in reply to|to)\s+(?:the\s+)?(?:end of\s+)?"
    r"(rcpt to|rcpt|mail from|mail|data|ehlo|helo)\b(?!\.\w)"  # not a host: "to mail.example"
    r"|>>> (rcpt to|mail from|data|ehlo|helo)|smtp command:? (rcpt|mail|data|ehlo|helo)"
    r"|did not like our (?:final )?(rcpt to|mail from|data|ehlo|helo)"
    # Refused before any command, at the greeting (Postfix, Exim wordings).
    r"|(refused to talk to me|after (?:the )?initial connection"
    r"|(?:after|in reply to|during) (?:the )?(?:smtp )?(?:greeting|banner|connect)\b)",
    re.IGNORECASE,
)
STAGES = {"MAIL": "MAIL", "RCPT": "RCPT", "DATA": "DATA", "EHLO": "HELO", "HELO": "HELO"}


# A refusal the wording and the code leave unexplained, by the stage it came at: at the
# greeting or HELO it is about the client host (sisimai's "blocked"), at MAIL FROM about the
# sender ("rejected"). RCPT and DATA refusals have too many causes for the stage to say.
STAGE_REASONS = {"CONN": "blocked", "HELO": "blocked", "MAIL": "rejected"}


def find_command(text: str) -> str:
    """The SMTP stage a report says the failure came at: CONN (the greeting), HELO, MAIL,
    RCPT, DATA, or ''."""
    m = COMMAND_RE.search(text or "")
    if not m:
        return ""
    if m.group(m.re.groups):  # the last group: no command, the connection itself
        return "CONN"
    word = next(g for g in m.groups() if g).split()[0].upper()
    return STAGES.get(word, "")


TRANSCRIPT_RE = re.compile(r"(?:^|(?<=\s))<<<\s+(?=[245]\d\d[ -])")
PREFIX_RE = re.compile(r"(?<![\w.])([245]\d\d)[ -]([245]\.\d{1,3}\.\d{1,3})?\s*")


def unfold_reply(text: str) -> str:
    """One line of words; a multi-line reply's repeated `550-5.7.1` prefixes dropped, so that
    its sentences read on across the line breaks."""
    # A Sendmail transcript marks each reply line with "<<< ": not part of the sentence.
    text = " ".join(TRANSCRIPT_RE.sub(" ", text or "").split())
    first = PREFIX_RE.search(text)
    if first is None:
        return text
    code, status = first.group(1), first.group(2)
    again = re.compile(rf"\s{code}[ -]" + (re.escape(status) + r"\s" if status else ""))
    return text[: first.end()] + again.sub(" ", text[first.end() :])


# Status-field codes too vague to stand against the code the remote server quoted: "delivery
# time expired", "too many errors", the X.3 system errors and the X.5 protocol errors are what
# a reporting MTA writes when it only knows that the session went wrong.
VAGUE_STATUS_RE = re.compile(r"^(4\.4\.7|4\.7\.0|5\.3\.\d+|[45]\.5\.[1245])$")


def prefer_status(field: str, quoted: str, code: int | None = None) -> str:
    """Choose between a DSN's Status field (the reporting MTA's mapping) and the RFC 3463 code
    the remote server quoted in its reply (sisimai's documented preference).

    The quoted code wins where the field is generic (X.0.0, X.Y.0, X.0.Z) or vague
    (`VAGUE_STATUS_RE`), and over 5.1.1 when it says more (5.7.x rather than X.5.x); the
    field wins otherwise, and a basic reply code settles a disagreement on the class.
    """
    if not field or not quoted or field == quoted:
        return field or quoted
    if field[0] != quoted[0]:
        if code is not None and str(code)[0] in (field[0], quoted[0]):
            return field if str(code)[0] == field[0] else quoted
        return field
    if field.endswith(".0.0"):
        return field if quoted.endswith(".0.0") else quoted
    if ".0" in field and ".0" not in quoted:
        return quoted
    if quoted.endswith(".0.0"):
        return field
    if VAGUE_STATUS_RE.match(field):
        return quoted
    if field == "5.1.1":
        return field if ".0" in quoted or quoted.startswith("5.5.") else quoted
    if field == "5.1.3" and quoted.startswith("5.7."):
        return quoted
    return field


def find_code(text: str) -> int | None:
    m = CODE_RE.search(text or "")
    return int(m.group(1)) if m else None


def reason_from_text(text: str, weak: bool = False) -> str:
    """The reason the first matching text rule gives (`rules.TEXT_RULES`, or with `weak` the
    generic `rules.WEAK_TEXT_RULES`), or ''."""
    if not text:
        return ""
    for reason, pattern in _weak() if weak else _compiled():
        if pattern.search(text):
            return reason
    return ""


COX_RE = re.compile(r"\bAUP#([A-Z0-9]+)", re.IGNORECASE)
GODADDY_RE = re.compile(r"\b(IB\d{3})\b")
ORANGE_RE = re.compile(r"\b(?:ofr|lpnaaa|lpn|ouk)(?:\d{3})?_?(\d{3})\b", re.IGNORECASE)
OUTLOOK_RE = re.compile(
    r"(?<![\w-])(" + "|".join(map(re.escape, providers.OUTLOOK_CODES)) + r")(?![\w-])"
)


@lru_cache(maxsize=1)
def _phrases() -> tuple[tuple[str, re.Pattern[str]], ...]:
    return tuple(
        (reason, re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE))
        for reason, patterns in providers.PHRASE_RULES
    )


def reason_from_provider(status: str, text: str) -> str:
    """The reason a provider's own error code or wording gives (`relay.bounce.providers`)."""
    for code_re, table in (
        (COX_RE, providers.COX_CODES),
        (ORANGE_RE, providers.ORANGE_CODES),
        (GODADDY_RE, providers.GODADDY_CODES),
        (OUTLOOK_RE, providers.OUTLOOK_CODES),
    ):
        for m in code_re.finditer(text):
            reason = table.get(m.group(1).upper())
            if reason:
                return reason
    cls_sub, _, detail = status.rpartition(".")
    if len(detail) == 3:  # Microsoft's own X.Y.ZZZ codes
        reason = providers.MICROSOFT_STATUS.get(status, "")
        for prefix, low, high, ranged in providers.MICROSOFT_RANGES:
            if not reason and cls_sub == prefix and low <= int(detail) <= high:
                reason = ranged
        if reason:
            return reason
    for reason, pattern in _phrases():
        if pattern.search(text):
            return reason
    return ""


def reason_from_status(status: str) -> str:
    return codes.reason_for_status(status)


def classify(
    status: str = "",
    text: str = "",
    code: int | None = None,
    action: str = "",
    command: str | None = None,
) -> Classification:
    """Classify a failure from whatever is known: enhanced status, text, basic code, action.

    `command` is the SMTP stage the failure came at (MAIL, RCPT, DATA, "" when a report does
    not say); None when the caller cannot know, which skips the stage rules.
    """
    text = unfold_reply(text)
    status = prefer_status(status, find_status(text), code if code is not None else find_code(text))
    if status.startswith("2") or action in ("delivered", "relayed", "expanded"):
        return Classification(BounceKind.NOT_BOUNCE, "delivered", status)
    sub = status.split(".", 1)[1] if status else ""
    provider = reason_from_provider(status, text)
    if provider:
        reason = provider
    elif sub in codes.DECISIVE_STATUS or status in codes.DECISIVE_STATUS:
        reason = reason_from_status(status)
    else:
        # Specific wording, then the status code, then generic wording, then the basic code.
        reason = reason_from_text(text)
        by_status = reason_from_status(status)
        if not reason and by_status not in ("", "undefined"):
            reason = by_status
        if not reason and command in STAGE_REASONS:
            reason = STAGE_REASONS[command]
        reason = reason or reason_from_text(text, weak=True)
        reason = reason or codes.reason_for_code(code if code is not None else find_code(text))
        reason = reason or by_status
    if command == "MAIL" and reason in ("userunknown", "hostunknown", "filtered"):
        # Refused at MAIL FROM: the unknown address or domain is the sender's (sisimai's
        # "rejected"), whatever the wording says of "user" or "domain".
        reason = "rejected"
    if status == "4.4.1" and action == "failed":
        reason = "expired"  # "no answer from host" in a final report: the retries ran out
    if code is None:
        code = find_code(text)
    permanent = _permanent(status, code, action)
    if not status and code is not None and 400 <= code < 600:
        status = f"{code // 100}.0.0"
    if (
        reason == "userunknown"
        and not provider  # a provider's own code or wording for a missing mailbox
        and command not in (None, "RCPT")
        and not sub.startswith("1.")
        and not _directory().search(text)
    ):
        # In a report, "user unknown" backed by neither a X.1.x code nor the RCPT stage is
        # often a content filter's wording (after DATA): too weak to condemn the address.
        reason = "filtered"
    if reason == "hostunknown" and not permanent:
        reason = "networkerror"  # a transient lookup failure is the network's, not the domain's
    if reason == "vacation":
        return Classification(BounceKind.NOT_BOUNCE, reason, status)
    if action == "delayed" and reason in ("", "systemerror", "onhold", "undefined"):
        # A delay notice: still being retried after generic trouble at the far end; the
        # message is ageing in a queue (sisimai's "expired" for delay reports).
        reason = "expired"
    if not reason or reason == "undefined":
        # Nothing decides: "onhold" when there are words to hold on to (sisimai's choice),
        # "undefined" when there are none.
        reason = "onhold" if text.strip() else "undefined"
    if reason == "mailboxfull":  # 5.2.2 included: the mailbox may be emptied
        return Classification(BounceKind.SOFT, reason, status)
    if permanent and reason in codes.HARD_REASONS:
        return Classification(BounceKind.HARD, reason, status)
    if action == "failed" and reason in codes.HARD_REASONS - {"notaccept"}:
        # A final report on an address the far end said it does not know, even with a 4xx
        # code (450 4.1.1): the MTA has given up, and the address is to blame.
        return Classification(BounceKind.HARD, reason, status)
    return Classification(BounceKind.SOFT, reason, status)


def _permanent(status: str, code: int | None, action: str) -> bool:
    if status:
        return status.startswith("5")
    if code is not None:
        return 500 <= code < 600
    return action != "delayed"


def classify_reply(reply: SmtpReply) -> Classification:
    """Classify the SMTP reply a delivery attempt ended with (not for 2xx replies)."""
    if reply.is_positive:
        return Classification(BounceKind.NOT_BOUNCE, "delivered", reply.enhanced or "")
    status = reply.enhanced or find_status(reply.text)
    # A basic code contradicting the enhanced one: the basic code decides the class.
    if status and reply.code and str(reply.code)[0] != status[0] and reply.code >= 400:
        status = f"{str(reply.code)[0]}{status[1:]}"
    return classify(status, reply.text, reply.code)
