"""Property tests: for generated HTML in any charset/transfer encoding, inside a multipart with
a binary attachment, the rendered message parses, the attachment and text part are
byte-identical, un-rewriting the tracked links gives the original URLs, and rendering is
deterministic."""

from __future__ import annotations

import base64
import html
import quopri

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.render import Renderer, collect_links
from tests.render import support as s

CFG = s.config()
RENDERER = Renderer(CFG, s.KEYRING)

hosts = st.sampled_from(["shop.example.com", "a.example", "excluded.example", "ü.example"])
paths = st.text(alphabet="abcxyz0189-._~/%?=&;", max_size=30)
http_urls = st.builds(lambda sch, h, p: f"{sch}://{h}/{p}", st.sampled_from(["http", "https"]),
                      hosts, paths)  # fmt: skip
other_urls = st.sampled_from(["mailto:a@example.com", "tel:+1555", "#top", "", "/relative"])
words = st.text(alphabet=st.characters(codec="latin-1", exclude_characters="<>&\r"), max_size=40)


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, list[str]]:
    pieces, urls = [], []
    for _ in range(draw(st.integers(0, 8))):
        url = draw(st.one_of(http_urls, other_urls))
        quote = draw(st.sampled_from(['"', "'"]))
        tag = draw(st.sampled_from(["a", "A", "area"]))
        attr = draw(st.sampled_from(["", ' class="c"', " data-x=1", " data-relay-notrack"]))
        pieces.append(f"{draw(words)}<{tag}{attr} href={quote}{html.escape(url)}{quote}>"
                      f"{draw(words)}</{tag}>")  # fmt: skip
        urls.append(url)
    body = "\n".join(pieces)
    closing = draw(st.sampled_from(["</body></html>\n", "\n", ""]))
    prefix = "<html><body>\n" if closing.startswith("</body>") else ""
    return prefix + body + closing, urls


def message(doc: str, charset: str, cte: str, attachment: bytes) -> bytes:
    data = doc.replace("\n", "\r\n").encode(charset)
    if cte == "base64":
        body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    elif cte == "quoted-printable":
        body = quopri.encodestring(data.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n") + b"\r\n"
    else:
        body = data + b"\r\n"
    att = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    return (
        b"From: a@example.com\r\nTo: b@example.org\r\nSubject: p\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\n'
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nplain https://shop.example.com/x\r\n"
        b"--B\r\nContent-Type: text/html; charset=" + charset.encode() + b"\r\n"
        b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body +
        b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\n" + att + b"--B--\r\n"
    )  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    documents(),
    st.sampled_from(["utf-8", "iso-8859-1"]),
    st.sampled_from(["8bit", "quoted-printable", "base64"]),
    st.binary(max_size=300),
    st.integers(1, 2**40),
)
def test_render_properties(
    doc: tuple[str, list[str]], charset: str, cte: str, attachment: bytes, delivery_id: int
) -> None:
    text, _ = doc
    raw = message(text, charset, cte, attachment)
    job = s.job(raw, CFG, delivery_id=delivery_id, message_id=delivery_id)
    out = RENDERER.render(job)
    assert out == RENDERER.render(job)  # deterministic
    msg = s.parse(out.data)
    assert msg.get_content_type() == "multipart/mixed"
    plain, html_part, binary = s.leaves(msg)
    assert binary.get_payload(decode=True) == attachment
    assert b"plain https://shop.example.com/x\r\n" in out.data
    assert html_part["Content-Transfer-Encoding"] == cte
    new_text = s.html_text(html_part)
    original = text.replace("\n", "\r\n")
    assert [s.unrewrite(u, job) for u in s.hrefs(new_text)] == s.hrefs(original)
    assert s.without_tracking(new_text) == s.without_tracking(original)
    assert len(s.PIXEL.findall(new_text)) == 1
    wanted = [
        u
        for tag, u in _tags_with_href(original)
        if u.startswith("http") and "excluded" not in u and "data-relay-notrack" not in tag
    ]
    assert collect_links(raw, CFG) == list(dict.fromkeys(wanted))  # fmt: skip


def _tags_with_href(text: str) -> list[tuple[str, str]]:
    out = []
    for chunk in text.split("<")[1:]:
        tag = chunk.split(">")[0]
        found = s.hrefs("<" + tag + ">")
        if found:
            out.append((tag, found[0]))
    return out
