"""Every SMTP reply ingress sends on purpose: one place, shared by code and tests."""

from __future__ import annotations

from relay.intake import REPLY_SENDER_DOMAIN, REPLY_STORE_DOWN

AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
AUTH_DISABLED = "535 5.7.8 This credential is disabled"
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required: issue STARTTLS before AUTH"
AUTH_BLOCKED = "454 4.7.0 Too many failed authentication attempts from your address, try later"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients for one message"
TOO_BIG = "552 5.3.4 Message size exceeds the limit of {limit} bytes"
LINE_TOO_LONG = "550 5.6.0 Message has a line longer than {limit} characters (RFC 5322 2.1.1)"
HEADER_TOO_BIG = "552 5.3.4 Header section larger than {limit} bytes"
BAD_ADDRESS = "553 5.1.3 {reason}"
BAD_SENDER = "501 5.1.7 {reason}"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
TOO_MANY_FROM_IP = "421 4.7.0 Too many connections from your address, try again later"
TIMEOUT = "421 4.4.2 Timeout waiting for the client, closing the connection"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
ERROR = "451 4.3.0 Internal error (reference {ref}), please retry later"
ACCEPTED = "250 2.0.0 Ok: queued as {id}"
SENDER_DOMAIN = REPLY_SENDER_DOMAIN
STORE_DOWN = REPLY_STORE_DOWN
