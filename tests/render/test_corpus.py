"""Rendering real-world message shapes from tests/render/corpus: structure, bytes, links."""

from __future__ import annotations

import email.policy
from email import message_from_bytes

import pytest

from relay.render import collect_links
from tests.render import support as s

CORPUS = sorted(p.name for p in s.CORPUS.glob("*.eml"))


def load(name: str) -> bytes:
    return (s.CORPUS / name).read_bytes()


@pytest.mark.parametrize("name", CORPUS)
def test_rendered_message_parses_with_same_structure(name: str) -> None:
    raw = load(name)
    _, data = s.render(raw)
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    before, after = s.parse(raw), s.parse(data)
    assert [p.get_content_type() for p in before.walk()] == [
        p.get_content_type() for p in after.walk()
    ]
    modern = message_from_bytes(data, policy=email.policy.default)
    for part in modern.walk():
        assert not [d for d in part.defects if "Header" not in type(d).__name__], part.defects


@pytest.mark.parametrize("name", CORPUS)
def test_non_html_parts_are_byte_identical(name: str) -> None:
    raw = load(name)
    _, data = s.render(raw)
    for part in s.leaves(s.parse(raw)):
        if s.is_rewritable_html(part):
            continue
        body = part.get_payload(decode=False)
        assert isinstance(body, str)
        assert body.encode("utf-8", "surrogateescape") in data or body.encode("latin-1") in data


@pytest.mark.parametrize("name", CORPUS)
def test_links_rewritten_and_recoverable_rest_byte_identical(name: str) -> None:
    raw = load(name)
    j, data = s.render(raw)
    html_before = [p for p in s.leaves(s.parse(raw)) if s.is_rewritable_html(p)]
    html_after = [p for p in s.leaves(s.parse(data)) if s.is_rewritable_html(p)]
    assert len(html_before) == len(html_after)
    for old, new in zip(html_before, html_after, strict=True):
        old_text, new_text = s.html_text(old), s.html_text(new)
        assert old.get_content_charset() == new.get_content_charset()
        assert [s.unrewrite(u, j) for u in s.hrefs(new_text)] == s.hrefs(old_text)
        tracked = [u for u in s.hrefs(new_text) if s.unrewrite(u, j) != u]
        assert len(tracked) == len([u for u in s.hrefs(old_text) if u in j.links])
        assert len(s.PIXEL.findall(new_text)) == 1
        assert s.without_tracking(new_text) == s.without_tracking(old_text)
        if "</body>" in old_text:
            assert s.PIXEL.search(new_text.split("</body>")[0])


def test_link_rules() -> None:
    links = collect_links(load("html_only.eml"), s.config())
    assert links == [
        "https://shop.example.com/sale?a=1&b=2",
        "https://shop.example.com/item/42",
        "http://blog.example.net/post",
        "https://shop.example.com/area",
    ]


def test_transfer_encodings_are_kept() -> None:
    for name, cte in (("alternative_qp.eml", "quoted-printable"), ("html_base64.eml", "base64"),
                      ("latin1_qp.eml", "quoted-printable"), ("eightbit_utf8.eml", "8bit"),
                      ("iso2022jp.eml", "7bit")):  # fmt: skip
        _, data = s.render(load(name))
        html = [p for p in s.leaves(s.parse(data)) if p.get_content_type() == "text/html"][0]
        assert html["Content-Transfer-Encoding"].lower() == cte, name


def test_overlong_7bit_line_becomes_quoted_printable() -> None:
    _, data = s.render(load("long_lines.eml"))
    msg = s.parse(data)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_all("Content-Transfer-Encoding") == ["quoted-printable"]
    assert "x" * 900 in s.html_text(msg)


def test_iso_2022_jp_text_survives() -> None:
    _, data = s.render(load("iso2022jp.eml"))
    text = s.html_text(s.parse(data))
    assert "こんにちは" in text and "こちら" in text
    assert text.count("/track/click/") == 2


def test_eightbit_utf8_survives() -> None:
    raw = load("eightbit_utf8.eml")
    _, data = s.render(raw)
    assert "Grüße aus Köln".encode() in data and "✓".encode() in data
    assert data.startswith(raw.split(b"\r\n\r\n")[0])


def test_html_attachment_is_not_rewritten() -> None:
    _, data = s.render(load("mixed_attachments.eml"))
    assert b'<a href="https://x.example.com/">attached</a>' in data


def test_lf_only_input_comes_out_crlf() -> None:
    raw = load("html_only.eml").replace(b"\r\n", b"\n")
    _, data = s.render(raw)
    assert b"\n" not in data.replace(b"\r\n", b"")
    _, crlf = s.render(load("html_only.eml"), message_id=4)
    assert data.split(b"\r\n\r\n", 1)[1] == crlf.split(b"\r\n\r\n", 1)[1]
