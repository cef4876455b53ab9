"""The test peer itself works: a real client delivers to it over loopback."""

from __future__ import annotations

import aiosmtplib
import pytest

from tests.peers import RecordingServer


async def test_recording_server_records_and_scripts() -> None:
    async with RecordingServer() as mx:
        mx.script_rcpt("bad@example.com", "550 5.1.1 No such user")
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=mx.port, timeout=10)
        await client.connect()
        errors, _ = await client.sendmail(
            "a@shop.example", ["ok@example.com", "bad@example.com"], b"Subject: x\r\n\r\nhi\r\n"
        )
        assert errors["bad@example.com"][0] == 550
        mx.script_data("451 4.3.0 try later")
        with pytest.raises(aiosmtplib.SMTPDataError) as info:
            await client.sendmail("a@shop.example", ["ok@example.com"], b"Subject: y\r\n\r\n")
        assert info.value.code == 451
        await client.quit()
    assert mx.connections == 1
    assert [m.rcpt_tos for m in mx.messages] == [["ok@example.com"]]
    assert b"Subject: x" in mx.messages[0].data


async def test_recording_server_auth_accepts_and_refuses() -> None:
    async with RecordingServer(auth={"app": "s3cret", "other": "pw"}) as mx:
        mx.refuse_auth("other")
        for user, password, code in (
            ("app", "wrong", 535),
            ("other", "pw", 535),  # a configured account, refused
            ("nobody", "x", 535),
        ):
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=mx.port, timeout=10)
            await client.connect()
            with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
                await client.login(user, password)
            assert info.value.code == code and info.value.message.startswith("5.7.8")
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
                await client.sendmail("a@shop.example", ["ok@example.com"], b"Subject: n\r\n\r\n")
            assert refused.value.code == 530  # no AUTH, no mail
            await client.quit()
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=mx.port, timeout=10)
        await client.connect()
        await client.login("app", "s3cret")
        await client.sendmail("a@shop.example", ["ok@example.com"], b"Subject: y\r\n\r\nhi\r\n")
        await client.quit()
    # aiosmtplib tries each mechanism (PLAIN, LOGIN) before giving up
    assert [user for user, ok in mx.logins if ok] == ["app"]
    assert {user for user, ok in mx.logins if not ok} == {"app", "other", "nobody"}
    assert [m.rcpt_tos for m in mx.messages] == [["ok@example.com"]]
