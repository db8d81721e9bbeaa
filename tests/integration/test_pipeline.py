"""`dalle3-pipeline`'s carry: after the recaption step, later steps read the captioners' text.

The steps world → recaption → vae → latents run through :func:`run_pipeline` with two
tiny random captioners, in both recaption modes. The latent shards the ldm stage trains
on must hold the captions the captioners wrote, not the world's ground truth.
"""
from __future__ import annotations

import json

import pytest

from dalle3.config import compose
from dalle3.data.shards import expand_shards
from dalle3.data.sidecar import read_sidecar
from dalle3.pipeline import PREFIX, build_steps, ldm_carry, quote, recaption_carry, run_pipeline
from dalle3.recaption.data import read_raw_samples
from helpers.captioners import TINY_CAPTIONER, write_random_exports

STEPS_TO_LATENTS = tuple(s for s in PREFIX if s.stage in ("world", "recaption", "vae", "latents"))


def members(shard: str) -> dict[str, dict[str, bytes]]:
    return {s.key: {suffix: data for _, suffix, data in s.members} for s in read_raw_samples(shard, {})}


def latent_dsc(out_dir) -> dict[str, str]:
    """``{key: dsc}`` of every latent training sample."""
    out = {}
    for shard in expand_shards(str(out_dir / "latents" / "train")):
        out.update({k: json.loads(m["json"])["dsc"] for k, m in members(shard).items()})
    return out


def test_pipeline_lists_every_stage_in_recipe_order_and_every_run_of_its_set():
    steps = build_steps(compose([]).pipeline)
    assert [s.stage for s in steps] == ["world", "judge", "text_encoder", "captioner_pretrain", "captioner_finetune",
                                        "captioner_finetune", "recaption", "vae", "latents", "ldm", "ldm",
                                        "ldm", "ldm", "eval"]  # the default set: no upsampling (pipeline.upsample)
    assert [s.stage for s in build_steps(compose(["pipeline=quick"]).pipeline)][9:11] == ["upsample", "ldm"]
    assert [s.name for s in steps if s.stage == "ldm"] == ["ldm_alt_seed0", "ldm_dsc65_seed0", "ldm_dsc95_seed0",
                                                           "ldm_dsc100_seed0"]
    assert next(s for s in steps if s.stage == "recaption").carry is recaption_carry
    full = [s.name for s in build_steps(compose(["pipeline=full"]).pipeline) if s.stage == "ldm"]
    assert len(full) == 13 and {"ldm_ssc95_seed0", "ldm_dsc80_seed0", "ldm_dsc90_seed0"} <= set(full)
    assert {f"ldm_{m}_seed{s}" for m in ("alt", "dsc95", "dsc100") for s in (0, 1, 2)} <= set(full)
    overrides = next(s for s in build_steps(compose(["pipeline=full"]).pipeline) if s.name == "ldm_ssc95_seed0").overrides
    assert compose(["stage=ldm", *overrides]).ldm.run_dir.endswith("ldm/blend_ssc0.95_seed0")


def test_eval_scores_exactly_the_ldm_runs_of_the_pipeline(tmp_path):
    carried: list[str] = []
    for overrides in (["caption=alt"], ["caption=blend", "caption.ratio=0.95"], ["caption=blend", "seed=1"]):
        carried += ldm_carry(compose(["stage=ldm", f"paths.out_dir={quote(f'{tmp_path}/o,1')}", *overrides]), carried)
    runs = compose(["stage=eval", *carried]).eval.runs
    assert runs == [f"{tmp_path}/o,1/ldm/alt_dsc0.95_seed0", f"{tmp_path}/o,1/ldm/blend_dsc0.95_seed0",
                    f"{tmp_path}/o,1/ldm/blend_dsc0.95_seed1"]


@pytest.mark.parametrize("mode", ["shards", "sidecar"])
def test_recaption_carry_points_later_steps_at_the_synthetic_captions(tmp_path, mode):
    cfg = compose(["stage=recaption", f"paths.out_dir={tmp_path}", f"recaption.mode={mode}"])
    later = compose(["stage=latents", f"paths.out_dir={tmp_path}", f"recaption.mode={mode}", *recaption_carry(cfg, [])])
    if mode == "shards":
        assert later.data.train_shards == cfg.recaption.out_dir and later.data.sidecar_dir is None
    else:
        assert later.data.train_shards == cfg.data.train_shards and later.data.sidecar_dir == cfg.recaption.out_dir
    odd = compose(["stage=recaption", f"paths.out_dir={tmp_path}", "recaption.mode=sidecar",
                   "recaption.input_shards='/data/a,/data/b\\'s'"])
    later = compose(["stage=latents", f"paths.out_dir={tmp_path}", *recaption_carry(odd, [])])
    assert later.data.train_shards == "/data/a,/data/b's"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["shards", "sidecar"])
def test_latents_after_recaption_hold_the_captioners_text_not_the_ground_truth(tmp_path, mode):
    out = tmp_path / "out"
    write_random_exports(out)
    overrides = ["experiment=smoke", f"paths.out_dir={out}", f"paths.data_dir={tmp_path / 'world'}",
                 "datagen.sizes.train=64", "datagen.sizes.val=16", "datagen.sizes.annotated=16", "datagen.sizes.judge=16",
                 "datagen.shard_size=32",
                 "datagen.workers=1", f"recaption.mode={mode}", "recaption.decode.max_new_tokens=6",
                 "recaption.batch_size=32", "recaption.num_workers=0", "recaption.progress_bar=false",
                 "trainer.max_steps=2", "trainer.progress_bar=false", "data.num_workers=0", *TINY_CAPTIONER]
    records = run_pipeline(overrides, STEPS_TO_LATENTS, progress=False)["steps"]
    assert [r["step"] for r in records] == ["world", "recaption", "vae", "latents"]
    assert all(r["status"] == "done" for r in records)

    written: dict[str, str] = {}  # key -> the DSC captioner's caption, as the recaption step wrote it
    truth: dict[str, str] = {}
    rc_out = out / "recaption" / "shards"
    for shard in expand_shards(str(tmp_path / "world" / "train")):
        truth.update({k: json.loads(m["json"])["dsc"] for k, m in members(shard).items()})
    if mode == "shards":
        for shard in expand_shards(str(rc_out)):
            written.update({k: json.loads(m["json"])["dsc"] for k, m in members(shard).items()})
    else:
        for sidecar in sorted(rc_out.glob("*.jsonl")):
            written.update({k: e["dsc"] for k, e in read_sidecar(str(sidecar)).items()})
    trained = latent_dsc(out)
    assert set(trained) == set(truth) == set(written) and len(trained) == 64
    assert trained == written
    assert sum(trained[k] != truth[k] for k in trained) == len(trained)  # random captioners: never the truth
