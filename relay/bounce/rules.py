"""The bounce rules table: data, not code. Extend it here.

`TEXT_RULES` maps a sisimai reason to regular expressions matched (case-insensitively)
against the SMTP reply or diagnostic text; the first reason whose pattern matches wins, in
table order, so specific reasons come before broad ones. `STATUS_RULES` maps an RFC 3463
enhanced status code (exact, then `class.subject.*`) to a reason when the text says nothing
useful. `HARD_REASONS` are the reasons that mean the address itself is bad.
`WEAK_TEXT_RULES` are wording too generic to stand against a status code: read only after
the code tables (`relay.bounce.codes`) found nothing.
"""

from __future__ import annotations

# reason -> patterns; order matters (first match wins).
TEXT_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "vacation",
        (
            r"out of (the )?office",
            r"auto(matic)?[ -]?reply",
            r"on vacation",
            r"away from (the|my) office",
        ),
    ),
    # Google Groups: the group does not exist or the sender may not post to it.
    ("rejected", (r"groups\.google\.com", r"permission to post")),
    (
        "blocked",
        (
            r"refused to talk to me",
            r"client host blocked",
            r"smtp server of your (isp|provider)",  # dynamic/residential client addresses
            r"dynamic (ip|address)",
            r"dial-?up",
        ),
    ),
    # Malformed messages, even when the reply also mentions spam or DKIM.
    (
        "notcompliantrfc",
        (
            r"\brfc ?(2822|5322)\b",  # the message format standard
            r"duplicate header",
            r"multiple addresses in from",
            r"not (rfc )?compliant",
            r"multiple (from|to|subject|date|message-id) header",
        ),
    ),
    ("securityerror", (r"unauthenticated senders?",)),
    ("mailererror", (r"procmail", r"mailer error", r"command (died|failed)")),
    ("contenterror", (r"8-?bit data",)),
    ("norelaying", (r"not configured to relay",)),
    ("suspend", (r"account (is )?(blocked|bloque)", r"\binactivity\b")),
    ("expired", (r"failing for a long time", r"retry time not reached")),
    (
        "notaccept",
        (
            r"no smtp service",  # an MX or SRV record says so (RFC 7505, RFC 6186)
            r"null mx",
            r"not accepting network messages",  # RFC 3463 X.3.2
            r"couldn't find a mail exchanger",  # qmail: no MX and no address
        ),
    ),
    ("onhold", (r"\bon hold\b",)),
    ("securityerror", (r"delivery not authori[sz]ed",)),  # RFC 3463 X.7.1
    ("requireptr", (r"mismatches client ip",)),  # Microsoft: HELO domain vs client address
    ("policyviolation", (r"potential security issue",)),  # Gmail 5.7.0
    # An explicit spam verdict, even from a content filter or in a reply that goes on to
    # advise on SPF or DKIM.
    (
        "spamdetected",
        (
            r"(rejected|blocked|refused|quarantined) (as|due to|because of|for) (its |being )?"
            r"(spam|junk|unsolicited|bulk)",
            r"(classified|identified|detected|flagged|marked|considered|scored|treated|"
            r"determined|tagged) (to be |as |like )?(spam|junk)",
            r"spam classification",
            r"looks like (spam|junk)",
            r"(message|mail|email|content) (is|was|appears to be|seems to be) (spam|junk)",
        ),
    ),
    # A reputation verdict, even in a reply that goes on to speak of protecting users from spam.
    ("badreputation", (r"\b(low|poor|bad|negative) reputation",)),
    ("filtered", (r"recipient preferences", r"domain filter", r"content filter")),
    # Lotus Notes/Domino: the address is not in the directory ("listed" would read as a DNSBL).
    (
        "userunknown",
        (
            r"not listed in (the )?(public )?name (&|and) address book",
            r"not (found|listed|present) in (the )?([\w-]+ )?directory",  # Domino, LDAP
        ),
    ),
    ("virusdetected", (r"\bvirus", r"malware", r"infected")),
    (
        "mesgtoobig",
        (
            # "message size exceeds fixed maximum", "mail size limit exceeded", "data size too
            # big" (RFC 3463 X.2.3 "message length exceeds administrative limit" is exceedlimit).
            r"\b(message|mail|e-?mail|data|msg)\b[^.;:]{0,12}\bsize\b[^.;:]{0,25}"
            r"\b(exceed|limit|maximum|too (large|big|long))",
            r"message (size )?(is )?too (large|big)",
            r"size (limit )?exceed",
            r"exceeds? (the )?(maximum|max\.?|message) (allowed )?size",
            r"message size exceeds",
            r"message too large",
            r"(mail|message|e-?mail|data) size (limit )?(exceed|too|over)",
            r"(?<!mailbox )(?<!mailbox's )size limit (exceeded|reached)",
            r"(maximum|max\.?) (message|mail|email) size",
            r"(message|mail|email) (is )?(larger|bigger) than",
            r"mail size",
            r"too big for this system",
            r"message length exceeds",
            r"line (length )?limit exceeded",
            r"line too long",
        ),
    ),
    (
        "exceedlimit",
        (r"message header size exceeds", r"exceeds? (the )?size limit"),
    ),
    (
        "hasmoved",
        (
            r"has moved",
            r"address (has )?changed",
            r"no longer (active|valid) at",
            r"(has )?been replaced by",
            r"user not local; please try",  # RFC 5321 551: a forward-path is offered
        ),
    ),
    (
        "mailboxfull",
        (
            r"mailbox (is )?full",
            r"over ?quota",
            r"quota (exceeded|exceed)",
            r"exceed(ed|s)? (the |its |their )?(storage|quota|mailbox)",
            r"mailbox size limit",
            r"mailbox exceeds",
            r"(mailbox|inbox|mail ?box|mail folder)\b[^.;]{0,40}\b(is )?(full|over (its |the )?"
            r"(quota|limit|size)|exceed(s|ed)?)",
            r"(mailbox|disk|storage|user|recipient)('s)? quota",
            r"out of storage",
            r"insufficient (disk )?(space|storage)",
            r"user (is )?over",
            r"not enough (storage|space)",
            r"mail ?box (has )?exceeded",
            r"full mailbox",
            r"storage (limit|allocation)",
            r"out of (disk )?space",
            r"is full",
        ),
    ),
    (
        "suspend",
        (
            r"(account|mailbox|user|address)( has been| is)? (disabled|suspended|"
            r"inactive|deactivated|locked|frozen|expired)",
            # Not Postfix's "delivery temporarily suspended": its queue defers a destination.
            r"(?<!delivery temporarily )suspended",
            r"temporarily (disabled|unavailable)",
            r"(?<!delivery )\b(temporar(il)?y|currently|is|been|was) (locked|frozen|disabled|"
            r"deactivated|suspended)\b",
            r"mailbox disabled",  # RFC 3463 X.2.1
            r"not active",
            r"inactive (user|account|mailbox)",
            r"account (is )?closed",
        ),
    ),
    (
        "requireptr",
        (
            r"reverse (dns|lookup|hostname)",
            r"\bptr\b",
            r"\brdns\b",
            r"no (dns )?reverse",
            r"cannot find your hostname",
            r"(client|host) (host )?name .*(unknown|not found)",
            r"unresolvable (host|address)",
            r"does not resolve",
            r"unverif(i|y)able sending ips?",  # Exim: the client's name and address do not match
        ),
    ),
    (
        "authfailure",
        (
            r"\bspf\b",
            r"\bdmarc\b",
            r"\bdkim\b",
            r"sender policy framework",
            r"not (an )?authorized (to send|sender)",
            r"unauthenticated (mail|email)",
            r"authentication (check )?fail",
        ),
    ),
    (
        "norelaying",
        (
            # Relaying refused, in any MTA's word order: "relay access denied", "relaying
            # not permitted", "we do not relay", "unable to relay for", "not allowed to relay".
            # Relaying refused, in any MTA's word order: "relay access denied", "relaying not
            # permitted", "we do not relay", "unable to relay for", "not allowed to relay".
            r"\brelay(ing)?\b[^.;:]{0,25}\b(denied|not|prohibited|refused|disallowed|"
            r"forbidden)",
            r"\b(not|cannot|can't|unable to|do not|don't|will not|won't|no)( be)?( (permitted|"
            r"allowed|authori[sz]ed|configured))?( to)? relay",
            # Amazon SES: the sending identity is not verified, so it will not relay for it.
            r"email address is not verified",
        ),
    ),
    (
        "failedstarttls",
        (
            r"starttls",
            r"\btls (is )?required",
            r"requires? (start)?tls\b",
            r"(support|offer|advertise)s? (start)?tls",
            r"\btls\b[^.;]{0,30}(required|not (supported|available|offered|advertised)|"
            r"handshake|negotiation)",
            r"encrypted (connection|channel|transport) (is )?required",
        ),
    ),
    (
        "securityerror",
        (
            r"authentication required",
            r"(smtp )?auth(entication)? is required",
            r"security (policy|error)",
            r"insecure",
            r"encryption required",
        ),
    ),
    (
        "toomanyconn",
        (
            r"too many (concurrent |simultaneous |open )?(connections|sessions)",
            r"\b(connection|session)s?\b[^.;:]{0,20}\b(rate|limit|exceeded)",
            r"too many sessions",
            r"too many recipients(?! (this|per|an?) (hour|minute|day))",  # RFC 3463 X.5.3
        ),
    ),
    (
        "speeding",
        (
            r"rate limit",
            r"unexpected volume",
            r"user complaints",
            r"too many (messages|mails|emails)",
            r"throttl",
            r"sending rate",
            r"too many recipients (this|per|an?) (hour|minute|day)",
            r"exceeded (the )?rate",
        ),
    ),
    (
        "spamdetected",
        (
            r"\bspam(?!haus|cop)",
            r"junk mail",
            r"unsolicited",
            r"bulk mail",
            r"content (was )?(rejected|flagged)",
            r"looks like spam",
        ),
    ),
    ("badreputation", (r"reputation",)),
    (
        "blocked",
        (
            r"block(ed|ing| ?list)",
            # A DNS block list, by name or by operator.
            r"black ?list|\bdnsbl|\brbl\b|spamhaus|spamcop|barracuda|sorbs|uceprotect|"
            r"abuseat|\bpsbl\b|mailspike|spamrats|ivmsip|cloudmark",
            r"(?<!not )listed (at|in|on|by)",
            r"client host( \S+)? rejected",
            r"access denied",
            r"connection refused by",
            r"your (ip|host|server|network)",
            r"ip address .*(rejected|not allowed)",
            r"not allowed to send",
            r"banned",
        ),
    ),
    ("policyviolation", (r"polic(y|ies)", r"prohibited", r"violat")),
    (
        "notcompliantrfc",
        (
            r"\brfc ?(822|2822|5322)\b(?! ?;)",  # not a DSN's address type, "rfc822; a@b"
            r"duplicate header",
            r"not (rfc )?compliant",
            r"multiple (from|to|subject|date)",
        ),
    ),
    # "content", but not a returned header name such as Content-Type.
    ("contenterror", (r"\bcontent(?![-:])", r"attachment", r"invalid (mime|character)")),
    (
        "rejected",
        (
            r"sender (address )?(rejected|denied|refused|unknown|verify failed)",
            r"domain of sender",
            r"from: domain (is )?invalid",
            r"sender domain",
            r"mail from",
            r"envelope from",
            r"return[- ]path",
            r"sender is not",
            r"sender's (address|domain)",
            r"\bbad sender",
            r"sender (address )?(is )?(invalid|not allowed|blacklisted|blocked|banned)",
            r"invalid sender",
            r"sender (address )?does not exist",
            r"unverified sender",
            r"purported responsible (address|domain)",  # Sender ID (RFC 4407): the sender's PRA
        ),
    ),
    (
        "notaccept",
        (
            r"(does not|doesn't) accept (any )?(e-?)?mail",
            r"null mx",
            r"no mx",
            r"not accepting (any )?mail",
            r"accepts no mail",
        ),
    ),
    (
        "hostunknown",
        (
            # An unknown, unresolvable or unroutable destination host or domain.
            r"\b(unknown|invalid|non-?existent|unresolvable|unroute?able) (mail )?(host|domain)\b",
            r"\bunroute?able\b",
            r"\b(host|domain)( or domain)?( name)?( \S+)? (is |was )?(not found|unknown|"
            r"does not exist|doesn't exist|could not be found|cannot be resolved|not valid)",
            r"non-?existent (host|domain)",
            r"no such host",
            r"unknown host",
            r"no such domain",
            r"unrouteable mail domain",
            r"unrouteable address",  # Exim: no route to the domain
            r"name or service not known",
            r"nxdomain",
            r"unknown domain",
            r"domain (is )?invalid",
            r"illegal host/domain",
            r"no (valid )?(mx|a) record",
            r"dns (error|lookup failed)",
        ),
    ),
    # A failed DNS lookup (Postfix "Name service error": SERVFAIL, timeouts, bad replies) says
    # nothing about whether the domain exists; only a "not found" (NXDOMAIN, matched just
    # above as hostunknown) does.
    (
        "networkerror",
        (
            r"name service error",
            r"unexpected name server reply",
            r"\bnetwork\b[^.;:]{0,20}\b(error|unreachable|failure|problem)",
        ),
    ),
    (
        "userunknown",
        (
            r"user unknown",
            r"unknown (user|recipient|local part|mailbox|address)",
            r"no such (user|mailbox|recipient|address|account)",
            r"user not found",
            r"(mailbox|recipient|address|account|user|addressee)( name)?"
            r"( is)? (not found|unknown|unavailable|invalid|does not exist|"
            r"doesn't exist|not exist)",
            r"does not exist",
            r"doesn't exist",
            r"invalid (recipient|address|mailbox|"
            r"user)",
            r"not a valid (user|mailbox|recipient)",
            r"no mailbox",
            r"not our customer",
            r"undeliverable address",
            r"bad destination mailbox",
            r"no account",
            r"is not a known user",
            r"not listed in",
            r"no valid recipients",
            r"user doesn't have",
            r"unknown (or illegal )?alias",
            r"not a valid recipient",
            r"no longer (active|available)",
            r"(recipient|user) (is )?not (recognized|found|valid|local)",
            # German, French, Spanish, Portuguese, Italian wordings of "unknown user".
            r"(benutzer|empf(ae|ä)nger|adresse|postfach) (ist )?unbekannt",
            r"(destinataire|utilisateur|adresse) (inconnue?|invalide)",
            r"n'existe pas",
            r"(usuario|destinatario|buz[oó]n) (desconocido|inexistente|no existe)",
            r"(utente|destinatario) (sconosciuto|inesistente)",
        ),
    ),
    (
        "expired",
        (
            # Failing, queued or retried for too long: "all hosts have been failing for a long
            # time", "aborted after 5.0 hour(s)", "could not be delivered within 5 days".
            r"\b(failing|failed|undeliver(able|ed)|not (been )?delivered|retr(y|ied|ying)|queued|"
            r"pending|delayed|aborted|abandoned|in (the )?queue)\b[^.;:]{0,40}\b(for|after|over|"
            r"within) (a long time|too long|(more than |at least )?[\d.]+ ?(hour|day))",
            r"(delivery|retry) time(out)? (expired|exceeded)",
            r"message expired",
            r"expired after",
            r"could not be delivered (within|for)",
            r"(in (the )?queue|queued|waiting|pending|undelivered) (for )?too long",
            r"too long in (the )?queue",
            r"undeliverable for",
            r"has been delayed",
            r"gave up",
            r"giving up",
            r"retry timeout",
            r"maximum time",
            r"queue (lifetime|timeout)",
            r"was not delivered for",
            r"(aborted|abandoned) after [\d.]+ (hour|day)",
            r"not been delivered for",
        ),
    ),
    (
        "networkerror",
        (
            r"connection (refused|timed out|reset|closed|lost)",
            r"timed? ?out",
            r"no route to host",
            r"network (is )?unreachable",
            r"mail (for .* )?loop",
            r"loops back",
            r"too many hops",
            r"lost connection",
            r"could not connect",
            r"unable to connect",
            r"\bdns\b",
            r"temporary lookup",
        ),
    ),
    ("systemfull", (r"system (storage|disk) (full|exceeded)", r"insufficient system storage")),
    (
        "mailererror",
        (
            r"mailer error",
            r"command (died|failed|output)",
            r"pipe to",
            r"exit code",
            r"procmail",
            r"local delivery failed",
        ),
    ),
    (
        "systemerror",
        (
            r"system error",
            r"internal (server )?error",
            r"local error",
            r"temporary (server |system )?(error|failure)",
            r"server (is )?busy",
            r"configuration error",
        ),
    ),
    (
        "syntaxerror",
        (
            r"syntax error",
            r"command unrecognized",
            r"bad sequence",
            r"(command|parameter) not implemented",
        ),
    ),
)

# Wording too generic to stand against an RFC 3463 code: consulted only when the code says
# nothing (absent, X.0.0, or a detail no table knows). Postfix writes "Recipient address
# rejected:" before any recipient restriction's verdict, not only before "User unknown".
WEAK_TEXT_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("userunknown", (r"recipient address rejected", r"address rejected")),
    ("rejected", (r"rejected", r"refused", r"denied")),
)
