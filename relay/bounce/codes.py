"""RFC 3463 enhanced status codes as bounce reasons: data, not code. Extend it here.

`STATUS_RULES` maps a code to a sisimai reason when the diagnostic text matches no specific
text rule (`relay.bounce.rules`). A full code ("4.2.1") is looked up first, because RFC 3463
gives some codes a different meaning as a transient and as a permanent failure; then
`subject.detail` with the class dropped, so 4.2.2 and 5.2.2 share a row; then the subject
alone (`SUBJECT_RULES`: X.7.99 is still a security or policy status). `CODE_RULES` maps a
basic reply code when nothing else speaks. `DECISIVE_STATUS` codes are so
specific that they beat the text. `HARD_REASONS`: the address itself is bad;
`POLICY_REASONS` blame the sender (charged to the account); `SENDER_REASONS` never count
toward a recipient's soft-bounce escalation.
"""

from __future__ import annotations

STATUS_RULES: dict[str, str] = {
    # Full codes whose meaning depends on the class.
    "4.2.1": "blocked",  # mailbox temporarily not accepting: a throttle, not the address
    # Generic transient codes name no condition (sisimai leaves them unmapped too).
    "4.3.0": "undefined",
    "4.4.0": "undefined",
    "4.3.2": "notaccept",
    "5.3.2": "notaccept",  # system not accepting network messages
    "4.4.4": "networkerror",  # unable to route, for now
    "4.5.3": "systemerror",
    "5.5.3": "toomanyconn",  # too many recipients for one transaction
    "4.7.1": "blocked",
    "5.7.0": "securityerror",
    "5.1.0": "userunknown",
    "5.1.4": "filtered",  # ambiguous address
    "5.2.0": "filtered",
    "5.5.4": "systemerror",
    "5.5.5": "systemerror",
    # subject.detail, either class.
    "0.0": "undefined",
    "1.0": "userunknown",
    "1.1": "userunknown",
    "1.2": "hostunknown",
    "1.3": "userunknown",
    "1.4": "userunknown",
    "1.5": "userunknown",
    "1.6": "hasmoved",
    "1.7": "rejected",
    "1.8": "rejected",
    "1.9": "systemerror",
    "1.10": "notaccept",
    "2.0": "filtered",
    "2.1": "suspend",
    "2.2": "mailboxfull",
    "2.3": "exceedlimit",
    "2.4": "filtered",
    "3.0": "systemerror",
    "3.1": "systemfull",
    "3.2": "systemerror",
    "3.3": "systemerror",
    "3.4": "mesgtoobig",
    "3.5": "systemerror",
    "4.0": "networkerror",
    "4.1": "networkerror",
    "4.2": "networkerror",
    "4.3": "systemerror",
    "4.4": "hostunknown",
    "4.5": "systemfull",  # mail system congestion
    "4.6": "networkerror",
    "4.7": "expired",
    # X.5.0, X.5.1 and X.5.4 are left to the basic code: servers send them for refusals of
    # every kind, not only for command syntax.
    "5.2": "syntaxerror",
    "5.3": "toomanyconn",
    "5.6": "syntaxerror",
    "6.0": "contenterror",
    "6.1": "contenterror",
    "6.2": "contenterror",
    "6.3": "contenterror",
    "6.5": "contenterror",
    "6.6": "contenterror",
    "7.0": "securityerror",
    "7.1": "securityerror",
    "7.2": "securityerror",
    "7.5": "securityerror",
    "7.6": "securityerror",
    "7.7": "securityerror",
    "7.8": "securityerror",
    "7.9": "securityerror",
    "7.10": "securityerror",
    "7.11": "securityerror",
    "7.13": "suspend",  # user account disabled
    "7.16": "mesgtoobig",  # message too big for the specified priority
    "7.17": "hasmoved",  # mailbox owner has changed
    "7.18": "hasmoved",  # domain owner has changed
    "7.20": "authfailure",  # no passing DKIM signature
    "7.21": "authfailure",
    "7.22": "authfailure",
    "7.23": "authfailure",  # SPF
    "7.24": "authfailure",
    "7.25": "requireptr",  # reverse DNS
    "7.26": "authfailure",
    "7.27": "notaccept",  # null MX (RFC 7505)
    "7.28": "spamdetected",  # mail flood
    "7.29": "authfailure",  # ARC
    "7.30": "failedstarttls",  # REQUIRETLS
}

# A subject with a detail no row above knows: RFC 3463's meaning of the subject alone.
SUBJECT_RULES: dict[str, str] = {
    "3": "systemerror",  # mail system status
    "4": "networkerror",  # network and routing status
    "6": "contenterror",  # message content or media status
    "7": "securityerror",  # security or policy status
}

# Basic reply codes (RFC 5321, RFC 7504) that name a condition when neither the wording nor
# the enhanced code does.
CODE_RULES: dict[int, str] = {
    500: "syntaxerror",  # syntax error, command unrecognised
    501: "syntaxerror",  # syntax error in parameters or arguments
    502: "syntaxerror",  # command not implemented
    503: "syntaxerror",  # bad sequence of commands
    504: "syntaxerror",  # command parameter not implemented
    521: "notaccept",  # host does not accept mail (RFC 7504)
    # Encryption needed or required (sisimai's STARTTLS reply codes; 538 is RFC 4954's).
    523: "failedstarttls",
    524: "failedstarttls",
    538: "failedstarttls",
    556: "notaccept",  # domain does not accept mail (RFC 7504)
}

# Codes (subject.detail) whose meaning is so specific that it beats the text rules.
DECISIVE_STATUS = frozenset(
    {"1.2", "1.6", "2.3", "3.4", "7.17", "7.18", "7.23", "7.25", "7.26", "7.27", "7.30"}
)

# The address itself is bad: suppress it (only when the failure is permanent).
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved", "notaccept"})
NOT_BOUNCE_REASONS = frozenset({"vacation", "delivered", "feedback"})

# A policy, reputation or spam block aimed at the sender: a permanent one charges the sending
# pool account's health (its bounce rate, `delivery.account_bounce_rate`), never the address.
POLICY_REASONS = frozenset(
    {
        "blocked",
        "spamdetected",
        "policyviolation",
        "badreputation",
        "authfailure",
        "requireptr",
        "securityerror",
        "norelaying",
        "rejected",
        "virusdetected",
    }
)
# Failures that are the sender's or the message's trouble, not the recipient's: they never
# count toward the soft-bounce escalation (`bounce.soft_bounce_limit`).
SENDER_REASONS = POLICY_REASONS | {
    "toomanyconn",
    "speeding",
    "mesgtoobig",
    "contenterror",
    "notcompliantrfc",
    "syntaxerror",
    "failedstarttls",
}


def reason_for_status(status: str) -> str:
    """The reason a status code alone implies: full code first, then subject.detail."""
    if not status or "." not in status:
        return ""
    sub = status.split(".", 1)[1]
    return (
        STATUS_RULES.get(status)
        or STATUS_RULES.get(sub)
        or SUBJECT_RULES.get(sub.split(".", 1)[0], "")
    )


def reason_for_code(code: int | None) -> str:
    """The reason a basic reply code alone implies, or ''."""
    return CODE_RULES.get(code, "") if code is not None else ""
