"""Integrity of the data the LDM sees (issue #14 item 4), end to end on the CPU.

World shards (their JSON holds the world's ground-truth ``ssc``/``dsc``) are recaptioned by
two tiny random captioners with ``recaption.max_pixels`` set so that one shard's larger
images are refused (``too_large``) while the data layer still decodes them. Checked: a
refused sample is marked failed with its ground truth kept as ``orig_*``, and trains on
its alt-text, counted, in both recaption modes; the latents stage redoes a finished shard
when its input changes (the raw world, then the recaptioned shards of the same base
names, then the world plus sidecars) and skips it when not; and what the LDM data module
delivers as the synthetic caption is the captioners' text, never the world's ground truth.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dalle3.config import compose
from dalle3.data.datamodule import ShardDataModule
from dalle3.data.shards import expand_shards
from dalle3.data.sidecar import read_sidecar, sidecar_name
from dalle3.recaption.data import read_raw_samples
from dalle3.recaption.stage import run_recaption
from dalle3.stages import run_stage
from helpers.captioners import write_random_exports

FIXTURE_VAE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_vae_16k"
SMALL = 32
"Side of the images the captioners accept; the third shard's are 64 px, 4x the pixel limit below."


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Captioner exports; world shards 00000-00001 (32 px) and 00002 (64 px); both recaption outputs."""
    from dalle3.config.schema import WorldConfig
    from dalle3.world.writer import write_split

    root = tmp_path_factory.mktemp("integrity")
    write_random_exports(root)
    world = root / "world"
    write_split(str(world), "train", 16, 8, WorldConfig(image_size=SMALL, max_objects=2), 0, progress=False)
    write_split(str(world), "train", 8, 8, WorldConfig(image_size=64, max_objects=2), 1, progress=False,
                shard_offset=2)
    summaries = {mode: run_recaption(compose(recaption_overrides(root, mode))) for mode in ("shards", "sidecar")}
    return {"root": root, "world": world / "train", "summaries": summaries}


def recaption_overrides(root: Path, mode: str) -> list[str]:
    return ["experiment=smoke", "stage=recaption", f"paths.out_dir={root}", f"paths.data_dir={root}/world",
            f"recaption.input_shards={root}/world/train", f"recaption.out_dir={root}/recaption_{mode}",
            f"recaption.mode={mode}", f"recaption.max_pixels={SMALL * SMALL}", "recaption.decode.max_new_tokens=4",
            "recaption.batch_size=8", "recaption.num_workers=0", "recaption.progress_bar=false"]


def samples_of(spec) -> dict[str, dict[str, bytes]]:
    """``{key: {suffix: bytes}}`` of every sample of the shards in ``spec``."""
    return {s.key: {suffix: data for _, suffix, data in s.members}
            for p in expand_shards(str(spec)) for s in read_raw_samples(p, {})}


def world_truth(setup) -> dict[str, dict]:
    return {k: json.loads(m["json"]) for k, m in samples_of(setup["world"]).items()}


def delivered(datamodule) -> dict[str, tuple[str, str, bool]]:
    """``{key: (caption, caption_kind, caption_fallback)}`` of one pass over the val loader."""
    return {k: (c, kind, fb) for b in datamodule.val_dataloader()
            for k, c, kind, fb in zip(b["key"], b["caption"], b["caption_kind"], b["caption_fallback"])}


def refused(setup) -> set[str]:
    return {k for k in world_truth(setup) if k.startswith("00002")}


def test_a_sample_the_job_cannot_caption_is_marked_and_trains_on_its_alt_text(setup):
    root, truth = setup["root"], world_truth(setup)
    for summary in setup["summaries"].values():  # the job's own failure counts are kept
        assert summary["job"]["samples_failed"] == {"too_large": 8} and summary["job"]["samples_captioned"] == 16
    out = samples_of(root / "recaption_shards")
    for key in refused(setup):
        meta = json.loads(out[key]["json"])
        assert (meta["recaption"], meta["recaption_error"]) == ("failed", "too_large")
        assert "dsc" not in meta and "ssc" not in meta and "dsc.txt" not in out[key]
        assert (meta["orig_ssc"], meta["orig_dsc"]) == (truth[key]["ssc"], truth[key]["dsc"])  # nothing lost
        assert out[key]["png"] == samples_of(setup["world"])[key]["png"]
    side = {k: e for p in expand_shards(str(setup["world"]))
            for k, e in read_sidecar(str(root / "recaption_sidecar" / sidecar_name(p))).items()}
    assert {k for k, e in side.items() if e.get("recaption") == "failed"} == refused(setup)

    cfg = compose(["experiment=smoke", "caption=dsc", "data.val_samples=1000", "data.num_workers=2"])
    for shards, sidecar in ((root / "recaption_shards", None), (setup["world"], root / "recaption_sidecar")):
        data = {**OmegaConf.to_container(cfg.data, resolve=True), "val_shards": str(shards)}
        got = delivered(ShardDataModule(data, cfg.caption, sidecar_dir=sidecar and str(sidecar)))
        assert set(got) == set(truth)  # the refused images decode fine here: they are not skipped
        fell_back = {k for k, (_, _, fb) in got.items() if fb}
        assert fell_back == refused(setup)
        assert all(got[k][:2] == (truth[k]["caption"], "alt") for k in fell_back)


def latents_overrides(root: Path, out: Path, *extra: str) -> list[str]:
    return ["experiment=smoke", "stage=latents", f"paths.out_dir={root}", f"paths.data_dir={root}/world",
            f"ldm.vae.pretrained={FIXTURE_VAE}", f"ldm.latents.out_dir={out}", "ldm.latents.splits=[train]",
            "ldm.latents.batch_size=8", "data.num_workers=0", *extra]


def run_latents(root: Path, out: Path, *extra: str):
    cfg = compose(latents_overrides(root, out, *extra))
    OmegaConf.resolve(cfg)
    return cfg, run_stage(cfg)["train"]


def ldm_captions(cfg) -> dict[str, tuple[str, str, bool]]:
    """What the LDM data module delivers from ``cfg``'s latent shards with ``caption=dsc``."""
    from dalle3.ldm.data import LatentDataModule
    from dalle3.ldm.stage import latent_data_cfg

    side = cfg.data.sidecar_dir
    ldm = compose(["experiment=smoke", "stage=ldm", "caption=dsc", "data.val_samples=1000",
                   f"paths.out_dir={cfg.paths.out_dir}", f"ldm.latents.out_dir={cfg.ldm.latents.out_dir}",
                   f"data.sidecar_dir={side}" if side else "data.sidecar_dir=null"])
    data = latent_data_cfg(ldm)
    data["val_shards"] = data["train_shards"]  # one pass, in order
    return delivered(LatentDataModule(data, ldm.caption))


def test_latents_redo_a_changed_input_and_the_ldm_reads_the_captioners_text(setup, tmp_path):
    root, truth, out = setup["root"], world_truth(setup), tmp_path / "latents"
    raw_cfg, first = run_latents(root, out, f"data.train_shards={setup['world']}")
    assert (first["done"], first["samples"]) == (3, 24)
    assert {k: c for k, (c, _, _) in ldm_captions(raw_cfg).items()} == {k: t["dsc"] for k, t in truth.items()}

    _, same = run_latents(root, out, f"data.train_shards={setup['world']}")
    assert (same["done"], same["skipped"], same["redone_input_changed"]) == (0, 3, 0)

    # the recaptioned shards share the world's base names: their latents must not be reused
    cfg, redo = run_latents(root, out, f"data.train_shards={root}/recaption_shards")
    assert (redo["done"], redo["skipped"], redo["redone_input_changed"]) == (3, 0, 3)
    written = samples_of(root / "recaption_shards")
    got = ldm_captions(cfg)
    assert set(got) == set(truth)
    for key, (caption, kind, fallback) in got.items():
        if key in refused(setup):
            assert (caption, kind, fallback) == (truth[key]["caption"], "alt", True)
        else:
            assert (caption, kind, fallback) == (written[key]["dsc.txt"].decode(), "dsc", False)
            assert caption != truth[key]["dsc"]  # the captioners' text, not the world's ground truth

    # sidecar mode: the input shards are the world's again, but its sidecars make them another input
    side = root / "recaption_sidecar"
    cfg, joined = run_latents(root, out, f"data.train_shards={setup['world']}", f"data.sidecar_dir={side}")
    assert (joined["done"], joined["redone_input_changed"]) == (3, 3)
    captions = {k: e for p in expand_shards(str(setup["world"]))
                for k, e in read_sidecar(str(side / sidecar_name(p))).items()}
    got = ldm_captions(cfg)
    assert {k for k, (_, _, fb) in got.items() if fb} == refused(setup)
    assert all(got[k][:2] == (captions[k]["dsc"], "dsc") for k in set(truth) - refused(setup))
    _, again = run_latents(root, out, f"data.train_shards={setup['world']}", f"data.sidecar_dir={side}")
    assert (again["done"], again["skipped"]) == (0, 3)
