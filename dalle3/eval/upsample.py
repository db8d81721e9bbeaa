"""``dalle3-eval ... upsample=true``: short prompts with and without prompt upsampling, paired.

Each short prompt (``upsample.kinds``: SSC and alt-text) is upsampled once for every run (same
text for every run, so runs stay comparable), and each run's final checkpoint generates from
the upsampled text with the same noise seed as from the prompt itself. Both images are scored
against the ORIGINAL short prompt: the judge CLIP against its text, the exact checks of the
facts it states. Records of the upsampled images have kind ``<kind>_up`` and carry the text
the LDM saw (``upsampled``) and the guard's ``fallback`` reason; :func:`upsampling_comparison`
pairs them with the ``<kind>`` records of the same run, prompt and seed.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence

from dalle3.eval.stats import by_run, mean_ci, paired_diff
from dalle3.utils.logging import get_logger

log = get_logger(__name__)

SUFFIX = "_up"
"Record kind of images generated from upsampled prompts: ``ssc_up``, ``alt_up``."


def upsampled_kind(kind: str) -> str:
    return kind + SUFFIX


class EvalUpsampling:
    """The upsampler of an evaluation and its answers, one per (kind, prompt key), computed once.

    Args:
        cfg: the composed root config (``upsample.*`` and ``eval.*``).
        upsampler: an :class:`dalle3.upsample.Upsampler` (default: built from ``cfg.upsample``).
    """

    def __init__(self, cfg: Any, upsampler: Any = None):
        from dalle3.upsample import build_upsampler

        self.cfg = cfg
        self.kinds = list(cfg.upsample.kinds)
        self.upsampler = upsampler if upsampler is not None else build_upsampler(cfg)
        self.answers: dict[str, dict[str, Any]] = {}
        self.fallbacks: dict[str, dict[str, int]] = {}

    def items(self, kind: str, prompts: Sequence[Any], encoder_tokenizer: Any) -> list:
        """The guarded answers for ``prompts`` of ``kind`` (upsampled on the first call)."""
        if kind not in self.answers:
            result = self.upsampler.upsample([p.text(kind) for p in prompts], encoder_tokenizer=encoder_tokenizer)
            self.answers[kind] = {p.key: item for p, item in zip(prompts, result.items)}
            self.fallbacks[kind] = dict(result.fallbacks)
        return [self.answers[kind][p.key] for p in prompts]

    def records(self, rid: str, parts: Any, sampler: Any, prompts: Sequence[Any], judge: Any,
                step: Optional[int]) -> list[dict]:
        """``<kind>_up`` records of one run's final checkpoint (images from the upsampled texts)."""
        from dalle3.eval.score import make_records, prompts_of
        from dalle3.ldm.generate import generate_batched

        e, out = self.cfg.eval, []
        for kind in self.kinds:
            ps = prompts_of(prompts, kind)
            items = self.items(kind, ps, parts.tokenizer)
            images = generate_batched(parts, sampler, [i.text for i in items], guidance=e.guidance, steps=e.steps,
                                      seed=e.seed, batch_size=e.batch_size)
            recs = make_records(rid, kind, ps, images, judge, seed=e.seed, step=step, out_dir=e.out_dir,
                                save_images=e.grid_prompts, label=upsampled_kind(kind))
            for rec, item in zip(recs, items):
                rec.update(upsampled=item.text, fallback=item.fallback)
            out += recs
            log.info("eval: %s scored on %d upsampled %s prompts (%s fallbacks)", rid, len(ps), kind,
                     sum(self.fallbacks[kind].values()))
        return out

    def summary(self) -> dict:
        """For ``upsample.json``: the upsampler and its fallbacks per kind."""
        u = self.cfg.upsample
        return {"name": u.name, "model": str(u.model), "generation": dict(u.generation),
                "prompts": {k: len(v) for k, v in self.answers.items()}, "fallbacks": self.fallbacks}


def upsampling_comparison(records: Sequence[Mapping], runs: Mapping[str, dict], metrics: Iterable[str],
                          n_boot: int = 2000) -> dict:
    """Per short kind, per final model run: with − without upsampling, paired over prompts and seeds.

    Returns: ``{kind: [{"run", "label", "n", "fallback_rate", "metrics": {metric: paired_diff
    (a = with, b = without)}, "with": {metric: mean_ci}, "without": {...}}]}``, only for kinds
    that have ``<kind>_up`` records.
    """
    metrics = list(metrics)
    kinds = sorted({r["kind"][:-len(SUFFIX)] for r in records if r["kind"].endswith(SUFFIX)})
    out: dict[str, list] = {}
    for kind in kinds:
        up = [r for r in records if r["kind"] == upsampled_kind(kind)]
        rows = []
        for run in [r for r in runs if runs[r]["kind"] == "model" and runs[r]["final"]]:
            mine = [r for r in up if r["run"] == run]
            if not mine:
                continue
            row = {"run": run, "label": runs[run]["label"], "n": len(mine),
                   "fallback_rate": sum(r.get("fallback") is not None for r in mine) / len(mine),
                   "metrics": {}, "with": {}, "without": {}}
            for m in metrics:
                a = by_run(records, upsampled_kind(kind), m).get(run, {})
                b = by_run(records, kind, m).get(run, {})
                row["metrics"][m] = paired_diff(a, b, n_boot=n_boot)
                row["with"][m], row["without"][m] = mean_ci(a.values(), n_boot), mean_ci(b.values(), n_boot)
            rows.append(row)
        out[kind] = rows
    return out
