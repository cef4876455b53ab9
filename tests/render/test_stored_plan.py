"""The rendering plan intake stores (`messages.render_plan`): restored, it is the plan a fresh
scan builds, renders the same bytes, and is refused for other bytes or another config."""

from __future__ import annotations

import pytest

from relay.render import Renderer, _plan, stored_plan
from tests.render import support as s

CORPUS = sorted(p.name for p in s.CORPUS.glob("*.eml"))


@pytest.mark.parametrize("name", CORPUS)
def test_a_stored_plan_restores_the_plan_a_scan_builds(name: str) -> None:
    raw = (s.CORPUS / name).read_bytes()
    cfg = s.config(rewrite_text_links=True)
    built = _plan.build(raw, cfg)
    assert _plan.load(raw, _plan.dump(built, cfg), cfg) == built


@pytest.mark.parametrize("name", CORPUS)
def test_rendering_from_a_stored_plan_gives_the_same_bytes(name: str) -> None:
    raw = (s.CORPUS / name).read_bytes()
    cfg = s.config()
    stored = stored_plan(raw, cfg)
    job = s.job(raw, cfg)
    scanned = Renderer(cfg, s.KEYRING, plans=_plan.PlanCache()).render(job).data
    restored_cache = _plan.PlanCache()
    restored = Renderer(cfg, s.KEYRING, plans=restored_cache)
    data = restored.render(s.job(raw, cfg, plan=stored)).data
    assert data == scanned
    assert restored_cache.misses == 1


def test_a_stored_plan_is_refused_for_other_bytes_another_config_or_garbage() -> None:
    raw = (s.CORPUS / CORPUS[0]).read_bytes()
    cfg = s.config()
    stored = _plan.dump(_plan.build(raw, cfg), cfg)
    assert _plan.load(raw + b"\r\nmore\r\n", stored, cfg) is None  # other bytes
    other = s.config(exclude_domains=["elsewhere.example"])
    assert _plan.load(raw, stored, other) is None  # tracking config changed since intake
    for junk in (b"", b"{", b"[1,2]", b'"text"', stored.replace(b"[1,", b"[9,", 1)):
        assert _plan.load(raw, junk, cfg) is None
    # The cache falls back to a scan: the result is still right.
    assert _plan.PlanCache().get(raw, other, stored) == _plan.build(raw, other)
