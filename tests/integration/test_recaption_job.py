"""`dalle3-recaption` end to end on the CPU with two tiny random captioners (gibberish, real plumbing).

Input: six synthetic-world shards, one shard holding every kind of bad sample (and a
pickle member that must never be unpickled), and two unreadable shards. Checked: every
input key exactly once in the output with its members intact, bad samples kept without
captions and listed in the manifest, unreadable shards reported and skipped, reruns
skip / ``overwrite`` redoes, sidecar mode joined by the data layer, the LDM data module
reading the output with ``caption=blend``, 2 ranks under torchrun, and SIGKILL + rerun.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dalle3.config import compose
from dalle3.data.captions import pick_caption
from dalle3.data.datamodule import ShardDataModule
from dalle3.data.offline import completed
from dalle3.data.shards import expand_shards
from dalle3.data.sidecar import read_sidecar, sidecar_name
from dalle3.recaption.data import read_raw_samples
from dalle3.recaption.stage import run_recaption as run
from helpers.captioners import write_random_exports
from helpers.shards import BAD_REASON, malicious_pickle, sample_key, write_shard

BIN = Path(sys.executable).parent
BAD = {1: "truncated", 2: "empty", 3: "no_image", 4: "huge"}
NOT_IMAGE, PICKLED = 5, 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Captioner exports, six world shards (8 samples each), a bad shard and two unreadable shards."""
    from dalle3.world.writer import write_split

    root = tmp_path_factory.mktemp("recaption")
    cfg = write_random_exports(root)
    world = write_split(str(root / "world"), "train", 48, 8, cfg.world, 0, progress=False)
    odd = root / "odd"
    odd.mkdir()
    write_shard(odd / "bad-00090.tar", 90, 8, size=32, bad=BAD,
                extra_members={NOT_IMAGE: {"png": b"plain text, not an image"},
                               PICKLED: {"pyd": malicious_pickle(root / "pwned")}})
    (odd / "notatar-00091.tar").write_bytes(b"this is not a tar file\n" * 100)
    write_shard(odd / "cut-00092.tar", 92, 8, size=32)
    data = (odd / "cut-00092.tar").read_bytes()
    (odd / "cut-00092.tar").write_bytes(data[: len(data) // 2])
    return {"root": root, "world": world, "odd": odd}


def overrides(setup, out_dir, *extra) -> list[str]:
    root = setup["root"]
    return ["experiment=smoke", "stage=recaption", f"paths.out_dir={root}", f"paths.data_dir={root}/world",
            f"recaption.out_dir={out_dir}", "recaption.decode.max_new_tokens=4", "recaption.batch_size=8",
            "recaption.progress_bar=false", *extra]


def keys_of(path) -> list[str]:
    """Sample keys of a shard, read to its end-of-archive blocks (raises on a partial tar)."""
    return [s.key for s in read_raw_samples(str(path), {})]


def members_of(path) -> dict[str, dict[str, bytes]]:
    return {s.key: {suffix: data for _, suffix, data in s.members} for s in read_raw_samples(str(path), {})}


def test_job_captions_every_sample_keeps_bad_ones_and_skips_unreadable_shards(setup, tmp_path):
    out = tmp_path / "out"
    spec = tmp_path / "inputs.txt"  # a list file naming both folders
    spec.write_text(f"{setup['root']}/world/train\n{setup['odd']}\n")
    summary = run(compose(overrides(setup, out, f"recaption.input_shards={spec}", "recaption.num_workers=2")))
    job = summary["job"]
    assert (job["shards_total"], job["shards_done"], job["shards_completed"], job["complete"]) == (9, 7, 7, False)
    assert sorted(os.path.basename(f["shard"]) for f in job["shards_failed"]) == ["cut-00092.tar", "notatar-00091.tar"]
    assert job["samples_captioned"] == 48 + 3 and job["output_samples"] == job["input_samples"] == 56
    assert job["samples_failed"] == {"bad_image": 2, "empty_image": 1, "no_image": 1, "too_large": 1}
    assert json.loads((out / "summary.json").read_text())["samples_captioned"] == 51
    assert job["startup_s"] > 0 and job["steady_images_per_s"] > 0  # start-up and steady state, apart
    assert sorted(os.listdir(out)) == ["00000.tar", "00001.tar", "00002.tar", "00003.tar", "00004.tar", "00005.tar",
                                       "_manifest", "_summary", "bad-00090.tar", "summary.json"]
    for shard in setup["world"]:  # every input sample exactly once, captioned, members intact
        before, after = members_of(shard), members_of(out / os.path.basename(shard))
        assert list(after) == list(before)
        for key, m in after.items():
            meta = json.loads(m["json"])
            assert m["png"] == before[key]["png"] and m["txt"] == before[key]["txt"]
            assert m["ssc.txt"].decode() == meta["ssc"] and m["dsc.txt"].decode() == meta["dsc"] != meta["orig_dsc"]
    bad = members_of(out / "bad-00090.tar")
    assert list(bad) == [sample_key(90, i) for i in range(8)]
    uncaptioned = {k for k, m in bad.items() if "dsc.txt" not in m}
    assert uncaptioned == {sample_key(90, i) for i in [*BAD, NOT_IMAGE]}
    assert bad[sample_key(90, PICKLED)]["pyd"] == members_of(setup["odd"] / "bad-00090.tar")[sample_key(90, PICKLED)]["pyd"]
    assert not (setup["root"] / "pwned").exists()
    entry = completed(str(out))["bad-00090.tar"]
    assert (entry["input_samples"], entry["output_samples"], entry["captioned"]) == (8, 8, 3)
    assert {e["key"]: e["reason"] for e in entry["errors"]} == \
        {sample_key(90, i): BAD_REASON[k] for i, k in BAD.items()} | {sample_key(90, NOT_IMAGE): "bad_image"}
    assert sorted(os.listdir(out / "_manifest" / "_failed")) == ["cut-00092.tar.json", "notatar-00091.tar.json"]

    again = run(compose(overrides(setup, out, f"recaption.input_shards={spec}", "recaption.num_workers=0")))
    assert (again["done"], again["skipped"], len(again["failed_shards"])) == (0, 7, 2)
    stamp, first = (out / "00000.tar").stat().st_mtime_ns, members_of(out / "00000.tar")
    redo = run(compose(overrides(setup, out, f"recaption.input_shards={setup['world'][0]}", "recaption.overwrite=true")))
    assert (redo["done"], redo["skipped"]) == (1, 0) and (out / "00000.tar").stat().st_mtime_ns != stamp
    assert members_of(out / "00000.tar") == first  # greedy decoding: the same captions again

    # the LDM-facing data module reads the output directly; blend picks the *generated* DSC caption
    cfg = compose(["experiment=smoke", "caption=blend", f"data.val_shards={out}", "data.val_samples=1000",
                   "data.num_workers=2"])
    batches = list(ShardDataModule(cfg.data, cfg.caption, seed=cfg.seed).val_dataloader())
    got = {k: (c, kind) for b in batches for k, c, kind in zip(b["key"], b["caption"], b["caption_kind"])}
    outputs = {k: m for p in expand_shards(str(out)) for k, m in members_of(p).items()}
    good = {k for k, m in outputs.items() if "dsc.txt" in m}
    assert set(got) == good and sum(int(b["n_skipped"]) for b in batches) == len(outputs) - len(good)
    for key, (caption, kind) in got.items():
        m = outputs[key]
        alt, ssc, dsc = m["txt"].decode(), m["ssc.txt"].decode(), m["dsc.txt"].decode()
        assert (caption, kind) == pick_caption(key, alt, ssc, dsc, "blend", cfg.caption.synthetic,
                                               cfg.caption.ratio, cfg.caption.seed)
    assert sum(kind == "dsc" for _, kind in got.values()) > 0.8 * len(got)


def test_sidecar_mode_is_joined_by_the_data_layer(setup, tmp_path):
    side = tmp_path / "side"
    world = f"{setup['root']}/world/train"
    summary = run(compose(overrides(setup, side, "recaption.mode=sidecar", f"recaption.input_shards={world}",
                                    "recaption.num_workers=1")))
    assert summary["job"]["complete"] and summary["captioned"] == 48
    assert sorted(p for p in os.listdir(side) if p.endswith(".jsonl")) == \
        sorted(sidecar_name(s) for s in setup["world"])
    generated = {k: e for s in setup["world"] for k, e in read_sidecar(str(side / sidecar_name(s))).items()}
    cfg = compose(["experiment=smoke", "caption=dsc", f"data.val_shards={world}", "data.val_samples=1000"])
    batches = list(ShardDataModule(cfg.data, cfg.caption, sidecar_dir=str(side)).val_dataloader())
    got = {k: (c, s) for b in batches for k, c, s in zip(b["key"], b["caption"], b["ssc"])}
    assert set(got) == set(generated) and len(got) == 48
    assert all(got[k] == (e["dsc"], e["ssc"]) for k, e in generated.items())
    assert all(len(m) == 3 for p in setup["world"] for m in members_of(p).values())  # inputs untouched


def _launch(setup, out, rank, world, *extra, log=None):
    env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
           "LOCAL_WORLD_SIZE": str(world), "OMP_NUM_THREADS": "1"}
    args = [str(BIN / "dalle3-recaption"), *overrides(setup, out, *extra)]
    return subprocess.Popen(args, env=env, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)


def assert_exactly_once(setup, out):
    for shard in setup["world"]:
        assert keys_of(out / os.path.basename(shard)) == keys_of(shard)
    assert sorted(completed(str(out))) == sorted(os.path.basename(s) for s in setup["world"])


@pytest.mark.dist
@pytest.mark.timeout(240)
def test_two_ranks_under_torchrun_cover_every_shard_once(setup, tmp_path):
    out = tmp_path / "out"
    cmd = [str(BIN / "torchrun"), "--nproc_per_node=2", "--no-python", str(BIN / "dalle3-recaption"),
           *overrides(setup, out, f"recaption.input_shards={setup['root']}/world/train", "recaption.num_workers=1")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=220, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"stage"')]
    assert sorted((s["rank"], s["world_size"], s["source"], s["done"]) for s in lines) == \
        [(0, 2, "torchrun", 3), (1, 2, "torchrun", 3)]
    assert_exactly_once(setup, out)
    merged = json.loads((out / "summary.json").read_text())
    assert merged["ranks_reported"] == 2 and merged["complete"] and merged["samples_captioned"] == 48
    assert set(merged["images_per_s_per_rank"]) == {"task0-rank0", "task0-rank1"}


@pytest.mark.dist
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_of_one_rank_then_rerun_finishes_exactly_once(setup, tmp_path):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    out = tmp_path / "out"
    # batch 1 and 40 forced tokens per caption: each shard takes ~16 decodes of 40 steps (~1 s on 2 cores),
    # long enough that a kill chosen "inside the nth shard" lands there and not after it
    extra = (f"recaption.input_shards={setup['root']}/world/train", "recaption.num_workers=1",
             "recaption.batch_size=1", "recaption.decode.max_new_tokens=40", "recaption.decode.min_new_tokens=40")
    with open(tmp_path / "r0.log", "wb") as log0, open(tmp_path / "r1.log", "wb") as log1:
        ranks = [_launch(setup, out, 0, 2, *extra, log=log0), _launch(setup, out, 1, 2, *extra, log=log1)]
        nth = rng.randint(1, 3)  # kill inside rank 1's nth shard (of 3): at a random point of its writes
        seen: set = set()
        deadline = time.time() + 150
        while time.time() < deadline and len(seen) < nth and ranks[1].poll() is None:
            seen.update(p.name for p in out.glob("*.tmp-r1-*"))
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.1))
        ranks[1].send_signal(signal.SIGKILL)
        assert ranks[1].wait(30) == -signal.SIGKILL, f"seed {seed}: rank 1 ended before the kill"
        assert ranks[0].wait(150) == 0, (tmp_path / "r0.log").read_text()[-3000:]
    for tar in out.glob("*.tar"):  # whatever is under a final name is a complete shard
        keys_of(tar)
    assert len(completed(str(out))) < 6, f"seed {seed}: the kill came after rank 1's last shard"
    with open(tmp_path / "rerun.log", "wb") as log:
        again = [_launch(setup, out, r, 2, *extra, log=log) for r in range(2)]
        assert [p.wait(150) for p in again] == [0, 0], (tmp_path / "rerun.log").read_text()[-3000:]
    assert_exactly_once(setup, out)
    assert not list(out.glob("*.tmp-*")), f"seed {seed}: stale temporary files"
    merged = json.loads((out / "summary.json").read_text())
    assert merged["complete"] and merged["ranks_reported"] == 2
    shutil.rmtree(out)
