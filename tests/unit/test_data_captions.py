"""Caption choice: each source gives its caption, the blend is seeded and hits its ratio."""
from __future__ import annotations

import math

import pytest

from dalle3.data.captions import PickCaption, blend_draw, pick_caption, wanted_kind

N = 4000
KEYS = [f"{i:09d}" for i in range(N)]


def caps(key: str) -> dict:
    return {"alt": f"alt {key}", "ssc": f"ssc {key}", "dsc": f"dsc {key}"}


@pytest.mark.parametrize("source", ["alt", "ssc", "dsc"])
def test_each_source_gives_its_own_caption(source):
    for key in KEYS[:50]:
        assert pick_caption(key, **caps(key), source=source) == (f"{source} {key}", source)


@pytest.mark.parametrize("synthetic", ["ssc", "dsc"])
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.95, 1.0])
def test_blend_ratio_is_within_binomial_tolerance(ratio, synthetic):
    picks = [pick_caption(k, **caps(k), source="blend", synthetic=synthetic, ratio=ratio) for k in KEYS]
    n_syn = sum(kind == synthetic for _, kind in picks)
    assert all(text == f"{kind} {k}" for k, (text, kind) in zip(KEYS, picks))
    assert {kind for _, kind in picks} <= {"alt", synthetic}
    sigma = math.sqrt(N * ratio * (1 - ratio))
    assert abs(n_syn - N * ratio) <= 4 * sigma  # exact at ratio 0 and 1


def test_blend_is_deterministic_and_order_free():
    forward = [pick_caption(k, **caps(k), source="blend", ratio=0.5, seed=3, epoch=2) for k in KEYS[:500]]
    backward = [pick_caption(k, **caps(k), source="blend", ratio=0.5, seed=3, epoch=2) for k in reversed(KEYS[:500])]
    assert forward == backward[::-1]


def test_blend_redraws_per_epoch_and_seed():
    def kinds(seed, epoch):
        return [pick_caption(k, **caps(k), source="blend", ratio=0.5, seed=seed, epoch=epoch)[1] for k in KEYS]
    base = kinds(0, 0)
    for other in (kinds(0, 1), kinds(1, 0)):
        changed = sum(a != b for a, b in zip(base, other)) / N
        assert abs(changed - 0.5) < 4 * math.sqrt(0.25 / N)  # independent draws: P(change) = 2p(1-p) = 0.5


def test_blend_draw_is_uniform_in_unit_interval():
    draws = [blend_draw(k) for k in KEYS]
    assert 0.0 <= min(draws) and max(draws) < 1.0
    assert abs(sum(draws) / N - 0.5) < 4 * math.sqrt(1 / 12 / N)


@pytest.mark.parametrize("missing", [None, ""])
@pytest.mark.parametrize("source", ["ssc", "dsc", "blend"])
def test_missing_synthetic_caption_falls_back_to_alt(source, missing):
    text, kind = pick_caption("k1", "alt k1", missing, missing, source=source, ratio=1.0)
    assert (text, kind) == ("alt k1", "alt")


def test_missing_alt_is_empty_string():
    assert pick_caption("k1", None, None, None, source="dsc") == ("", "alt")
    assert pick_caption("k1", None, "s", "d", source="alt") == ("", "alt")


def test_bad_source_or_synthetic_raises():
    with pytest.raises(ValueError, match="web"):
        pick_caption("k", "a", "s", "d", source="web")
    with pytest.raises(ValueError, match="alt"):
        pick_caption("k", "a", "s", "d", source="blend", synthetic="alt", ratio=1.0)


def test_pick_caption_stage_reads_a_live_epoch():
    epoch = [0]
    stage = PickCaption("blend", "dsc", 0.5, seed=0, epoch=lambda: epoch[0])
    samples = [{"key": k, **caps(k)} for k in KEYS[:200]]
    first = [s["caption_kind"] for s in stage(dict(s) for s in samples)]
    epoch[0] = 1
    second = [s["caption_kind"] for s in stage(dict(s) for s in samples)]
    assert first == [pick_caption(k, **caps(k), source="blend", ratio=0.5, epoch=0)[1] for k in KEYS[:200]]
    assert second == [pick_caption(k, **caps(k), source="blend", ratio=0.5, epoch=1)[1] for k in KEYS[:200]]
    assert first != second


def test_pick_caption_stage_marks_counts_and_warns_about_fallbacks(caplog):
    stage = PickCaption("blend", "dsc", 0.5, seed=0, warn_first=2, warn_every=3)
    samples = [{"key": k, **caps(k)} for k in KEYS[:400]]
    for s in samples[::2]:
        s["dsc"] = ""  # e.g. the recaption job could not caption it
    out = list(stage(dict(s) for s in samples))
    wanted = [wanted_kind(s["key"], "blend", "dsc", 0.5) for s in samples]
    expect = [w == "dsc" and not s["dsc"] for w, s in zip(wanted, samples)]
    assert [s["caption_fallback"] for s in out] == expect and 50 < sum(expect) < 150
    assert all(s["caption"] == s["alt"] and s["caption_kind"] == "alt" for s, e in zip(out, expect) if e)
    assert stage.fallbacks == sum(expect)
    lines = [r.getMessage() for r in caplog.records if "alt-text" in r.getMessage()]
    first = next(s["key"] for s, e in zip(out, expect) if e)
    assert len(lines) == 2 + sum(expect) // 3 and repr(first) in lines[0]  # the first few by key, then every 3rd
    assert not any(s["caption_fallback"] for s in PickCaption("alt")(dict(s) for s in samples))
