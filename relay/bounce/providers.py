"""Mailbox providers' own error codes as bounce reasons: data, not code. Extend it here.

Big providers quote a code of their own in their replies (Cox `AUP#CXBL`, Orange `OFR_416`,
GoDaddy `IB607`, Yahoo `[BL21]`, Outlook.com `(S3150)`, Exchange Online's three-digit enhanced
codes such as 5.7.606) and document what each means. Such a code holds for any bounce from
that provider, so it beats the general wording rules (`relay.bounce.rules`) and the RFC 3463
code tables (`relay.bounce.codes`). Sources: each provider's postmaster pages, named above
its table.
"""

from __future__ import annotations

# Cox (cox.com "Email error codes" / postmaster pages): the code follows "AUP#".
COX_CODES: dict[str, str] = {
    "CXBL": "blocked",  # sending IP blocked for spam-like behaviour
    "CDRBL": "blocked",  # sending IP temporarily blocked (at most 24 hours)
    "CXDNS": "requireptr",  # reverse DNS of the sending IP fails
    "CXSNDR": "authfailure",  # SPF / DKIM of the sending domain failed
    "CXSMTP": "rejected",  # SMTP protocol violation: not a legitimate sender
    "CXCNCT": "toomanyconn",  # too many concurrent connections from the IP
    "CXMXRT": "toomanyconn",  # too many recipients: wait before sending more
    "CXTHRT": "securityerror",  # sending limited: suspicious account activity
    "CXMJ": "securityerror",  # sending blocked: suspicious activity on the account
    # IPBL<flags>: listed on DNSBLs (Spamhaus, Return Path, ivmSIP, Cloudmark CSI).
    **{f"IPBL{n:04b}": "blocked" for n in range(1, 16)},
    "IPBL00001": "blocked",
    # URLBL<flags>: a URL in the body is on SURBL / Spamhaus DBL / ivmURI.
    "URLBL011": "spamdetected",
    "URLBL101": "spamdetected",
    "URLBL110": "spamdetected",
    "URLBL1001": "spamdetected",
}

# Orange / Wanadoo / La Poste (Orange postmaster "codes d'erreur SMTP"): the last three digits
# of OFRnnn_ddd, OFR_ddd, LPNnnn_ddd, LPNddd, OUK_ddd. Codes that only say "try later" are
# left out: the reply's wording decides those.
ORANGE_CODES: dict[str, str] = {
    "101": "blocked",  # client listed on a DNSBL (Spamhaus)
    "102": "blocked",  # source IP blocked for spam
    "103": "blocked",  # service refused
    "104": "toomanyconn",  # too many connections, slow down
    "305": "securityerror",  # invalid authentication code
    "401": "authfailure",  # SPF: not allowed to send
    "402": "securityerror",  # authentication required
    "403": "rejected",  # invalid sender
    "405": "rejected",  # invalid sender
    "415": "rejected",  # invalid sender
    "416": "userunknown",  # invalid recipient
    "417": "mailboxfull",  # recipient over quota
    "420": "suspend",  # archived recipient
    "421": "rejected",  # mail from not owned by the user
    "426": "suspend",  # the recipient's account is blocked
    "505": "systemerror",  # service refused, try later (after DATA)
    "506": "spamdetected",  # mail rejected
    "510": "blocked",  # service refused after DATA
    "514": "mesgtoobig",  # message size limit reached
    "517": "authfailure",  # DMARC verification failed
    "630": "policyviolation",  # client host rejected
    "999": "blocked",  # service refused
}

# GoDaddy (smtp.secureserver.net; GoDaddy Help "Fix rejected email with a bounce error"): the
# reply ends with "IBnnn".
GODADDY_CODES: dict[str, str] = {
    "IB212": "spamdetected",  # content judged to be spam by the internet community
    "IB401": "securityerror",  # authentication is not allowed on inbound servers
    "IB501": "notcompliantrfc",  # blank From: address
    "IB502": "notcompliantrfc",  # an IP address as the From: address
    "IB506": "rejected",  # From: domain is invalid (no MX, no address)
    "IB508": "authfailure",  # the sender's SPF record does not authorise the IP
    "IB607": "speeding",  # too many recipients this hour from the IP
}

# Outlook.com / Hotmail postmaster codes (Outlook.com "Troubleshooting" page), quoted as
# "(S3150)" or "RP-001" in the reply.
OUTLOOK_CODES: dict[str, str] = {
    "S3140": "blocked",  # part of their network is on our block list
    "S3150": "blocked",  # part of their network is on our block list
    "S3115": "toomanyconn",  # exceeded the maximum number of connections
    "S775": "badreputation",  # rate limited due to IP reputation
    "RP-001": "badreputation",  # rate limit: IP / domain reputation
    "RP-002": "badreputation",
    "RP-003": "badreputation",  # connection limit: IP / domain reputation
    "SC-001": "badreputation",  # spam-like content or IP / domain reputation
    "SC-002": "policyviolation",  # namespace mining
    "SC-003": "blocked",  # open proxy / relay
    "SC-004": "blocked",  # complaints about mail from the IP
    "DY-001": "blocked",  # dynamic IP
    "OU-001": "blocked",  # Spamhaus listing
    "OU-002": "badreputation",
}

# Exchange Online / Outlook.com enhanced codes with a three-digit detail (Microsoft "Email
# non-delivery reports and SMTP errors in Exchange Online"): RFC 3463 registers none past
# X.Y.30, so these are Microsoft's own. Exact codes first, then (class.subject, low, high).
MICROSOFT_STATUS: dict[str, str] = {
    "5.1.351": "userunknown",  # remote server returned unknown recipient
    "5.2.121": "speeding",  # recipient's per-hour receive limit from this sender
    "5.2.122": "speeding",  # recipient's per-hour receive limit
    "5.3.190": "systemerror",  # journaling archive disabled
    "5.4.300": "expired",  # message expired
    "4.4.312": "networkerror",  # DNS query failed
    "5.4.312": "networkerror",
    "4.4.316": "networkerror",  # connection refused
    "5.4.316": "expired",  # message expired after refused connections
    "4.4.317": "failedstarttls",  # STARTTLS is required to send mail
    "5.4.317": "failedstarttls",
    "4.4.318": "systemerror",  # connection closed abruptly (SuspiciousRemoteServerError)
    "5.4.318": "systemerror",
    "5.7.124": "rejected",  # sender not in the group's allowed senders
    "5.7.133": "rejected",  # sender not authenticated for group
    "5.7.134": "rejected",  # sender not authenticated for mailbox
    "5.7.135": "rejected",  # sender not authenticated for public folder
    "5.7.136": "rejected",  # sender not authenticated for mail user
    "5.7.504": "suspend",  # recipient address rejected: access denied
    "5.7.505": "suspend",  # banned recipient
    "5.7.506": "blocked",  # bad HELO
    "5.7.507": "blocked",  # rejected by recipient's organization
    "5.7.508": "speeding",  # IPv6 range exceeded permitted limits
    "5.7.509": "authfailure",  # DMARC
    "5.7.510": "blocked",  # does not accept email over IPv6
    "5.7.511": "blocked",  # banned sender
    "5.7.512": "rejected",  # From must be RFC 5322 section 3.6.2 compliant
    "5.7.513": "blocked",  # customer block list
    "5.7.515": "authfailure",  # sending domain below the required authentication level
    "4.7.650": "badreputation",  # rate limited due to IP reputation
    "4.7.652": "toomanyconn",  # maximum number of connections exceeded
    "5.7.750": "rejected",  # unregistered domains
}
MICROSOFT_RANGES: tuple[tuple[str, int, int, str], ...] = (
    ("4.4", 321, 325, "failedstarttls"),  # DANE / MTA-STS failures
    ("5.4", 321, 325, "failedstarttls"),
    ("4.7", 321, 325, "failedstarttls"),
    ("5.7", 321, 325, "failedstarttls"),
    ("5.7", 501, 503, "rejected"),  # sending account banned for spam
    ("5.7", 606, 649, "blocked"),  # banned sending IP
    ("4.7", 500, 699, "blocked"),  # access denied, suspicious activity: try later
    ("4.7", 850, 899, "blocked"),
    ("5.7", 900, 999, "policyviolation"),  # rejected by a mail flow (transport) rule
)

# Provider wording that names one provider's own condition; reason -> patterns, first match
# wins. Exchange's resolver/categorizer tokens; Yahoo's bracketed codes and its "dd" replies
# (senders.yahooinc.com "SMTP error codes"); Apple iCloud's (support.apple.com HT204137).
PHRASE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "userunknown",
        (
            r"resolver\.adr\.(ex)?recip(ient)?notfound",
            r"delivery error: dd this user doesn't have an? ",  # Yahoo / AOL
            r"\binactive email address\b",  # iCloud
        ),
    ),
    ("hostunknown", (r"smtpsend\.dns\.nonexistentdomain",)),
    ("networkerror", (r"smtpsend\.dns\.mxloopback",)),
    ("mesgtoobig", (r"resolver\.rst\.recipsizelimit",)),
    ("mailboxfull", (r"quotaexceededexception",)),
    ("rejected", (r"resolver\.rst\.(authrequired|notauthorized)", r"\[tss(09|11)\]")),
    (
        "suspend",
        (r"delivery error: dd \S+ is no longer valid", r"this mailbox is disabled \(554\.30\)"),
    ),
    ("hasmoved", (r"recipient no longer on server",)),  # iCloud 5.1.6
    ("blocked", (r"\[bl2[1-3]\]",)),  # Yahoo: listed on Spamhaus
    ("policyviolation", (r"\[ph01\]", r"\[cs01\]", r"not accepted for policy reasons")),
    ("authfailure", (r"\[hme1\]", r"yahoo requires all senders to authenticate")),
    ("speeding", (r"user is receiving mail too quickly", r"deferred due to excessive volume")),
    ("toomanyconn", (r"max message per connection reached",)),
)

# The recipient's own directory says there is no such mailbox: "userunknown" at any SMTP
# stage, never read as a content filter's wording (see relay.bounce.classify). Lotus
# Domino's Name & Address Book; Exchange 2003's categorizer code 000C05A6 (unknown recipient);
# Sendmail's local delivery agent (mail.local); Gmail's own "address couldn't be found".
DIRECTORY_RULES: tuple[str, ...] = (
    r"not listed in (the )?(public )?name (&|and) address book",
    r"not listed in (the )?domino directory",
    r"\(000c05a6\)",
    r"mail\.local: unknown user",
    r"because the address couldn't be found",
)
