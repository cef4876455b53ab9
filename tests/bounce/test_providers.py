"""Providers' own error codes (relay.bounce.providers) beat the general wording rules."""

from __future__ import annotations

import pytest

from relay.bounce import classify, classify_reply
from relay.model import BounceKind, SmtpReply

HARD, SOFT = BounceKind.HARD, BounceKind.SOFT


@pytest.mark.parametrize(
    ("code", "enhanced", "text", "kind", "reason"),
    [
        # Cox: the AUP# code decides, whatever the sentence says ("sender rejected").
        (550, "5.1.0", "<a@example.com> sender rejected. AUP#CDRBL", SOFT, "blocked"),
        (554, None, "cox.net rejected - AUP#CXDNS", SOFT, "requireptr"),
        (421, None, "Too many connections AUP#CXCNCT", SOFT, "toomanyconn"),
        (554, None, "Message rejected AUP#IPBL1010", SOFT, "blocked"),
        # Orange / La Poste numbered codes.
        (550, "5.2.0", "Mail rejete. Mail rejected. ofr_506 [506]", SOFT, "spamdetected"),
        (
            421,
            "4.2.0",
            "Service refuse. Service refused, please try later. OFR005_505",
            SOFT,
            "systemerror",
        ),
        (
            550,
            "5.5.0",
            "Boite du destinataire archivee. Archived recipient. LPN007_420",
            SOFT,
            "suspend",
        ),
        (550, "5.1.1", "Adresse d au moins un destinataire invalide. LPN416", HARD, "userunknown"),
        # Exchange Online / Outlook.com.
        (550, "5.4.312", "Message expired, DNS query failed", SOFT, "networkerror"),
        (550, "5.7.606", "Access denied, banned sending IP [192.0.2.1]", SOFT, "blocked"),
        (
            451,
            "4.7.650",
            "The mail server [192.0.2.1] has been temporarily rate limited due to "
            "IP reputation. (S775)",
            SOFT,
            "badreputation",
        ),
        (
            550,
            "5.7.1",
            "Unfortunately, messages from [192.0.2.1] weren't sent. Please contact "
            "your Internet service provider since part of their network is on our block list "
            "(S3150).",
            SOFT,
            "blocked",
        ),
        (
            550,
            "5.1.10",
            "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
            HARD,
            "userunknown",
        ),
        # Yahoo and iCloud.
        (553, "5.7.1", "[BL21] Connections will not be accepted from 192.0.2.1", SOFT, "blocked"),
        (
            554,
            None,
            "Message not allowed - [PH01] Email not accepted for policy reasons",
            SOFT,
            "policyviolation",
        ),
        (550, "5.1.6", "recipient no longer on server: a@icloud.com", HARD, "hasmoved"),
    ],
)
def test_provider_codes(
    code: int, enhanced: str | None, text: str, kind: BounceKind, reason: str
) -> None:
    c = classify_reply(SmtpReply(code, text, enhanced))
    assert (c.kind, c.reason) == (kind, reason)


def test_provider_userunknown_is_not_demoted_after_data() -> None:
    # Yahoo answers a missing mailbox after DATA; its "dd" reply is its directory's word.
    text = "554 delivery error: dd This user doesn't have a yahoo.com account (a@yahoo.com) [0]"
    c = classify("5.0.0", text, None, "failed", "DATA")
    assert (c.reason, c.kind) == ("userunknown", HARD)


@pytest.mark.parametrize(
    "text",
    [
        "mail.local: unknown user: kijitora",  # Sendmail's local delivery agent
        "Your message wasn't delivered to a@example.it because the address couldn't be found.",
    ],
)
def test_directory_wording_is_userunknown_at_any_stage(text: str) -> None:
    c = classify("5.0.0", text + " 550 User unknown", None, "failed", "")
    assert (c.reason, c.kind) == ("userunknown", HARD)
