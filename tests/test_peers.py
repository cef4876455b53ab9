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
