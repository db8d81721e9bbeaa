"""`dalle3-recaption` with more than one live process per output: leases, orphans, and any shard layout.

Checked as a user would meet it: two full copies of the job started together on the
same inputs and output both exit 0 and share the work (each shard done once, the
manifest says by whom); the ``torchrun`` launcher SIGKILLed mid-run (its ranks orphaned,
still working) and the job rerun at once exits 0 with every key exactly once; two
img2dataset folders with the same shard names are recaptioned together (a lease left by
a dead process among them) and read back by the data module, every key once.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from dalle3.config import compose
from dalle3.data.datamodule import ShardDataModule
from dalle3.data.lease import Holder, acquire
from dalle3.data.offline import completed
from dalle3.recaption.data import read_raw_samples
from dalle3.recaption.stage import run_recaption as run
from helpers.captioners import write_random_exports
from helpers.shards import sample_key, write_shard

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Captioner exports and six world shards of 8 samples."""
    from dalle3.world.writer import write_split

    root = tmp_path_factory.mktemp("leases")
    cfg = write_random_exports(root)
    world = write_split(str(root / "world"), "train", 48, 8, cfg.world, 0, progress=False)
    return {"root": root, "world": world}


def overrides(setup, out, *extra, inputs=None) -> list[str]:
    root = setup["root"]
    return ["experiment=smoke", "stage=recaption", f"paths.out_dir={root}", f"paths.data_dir={root}/world",
            f"recaption.input_shards={inputs or str(root) + '/world/train'}", f"recaption.out_dir={out}",
            "recaption.decode.max_new_tokens=4", "recaption.batch_size=8", "recaption.progress_bar=false",
            "recaption.num_workers=1", "recaption.lease_timeout_s=10", *extra]


def keys_of(path) -> list[str]:
    """Sample keys of a shard, read to its end-of-archive blocks (raises on a partial tar)."""
    return [s.key for s in read_raw_samples(str(path), {})]


def assert_exactly_once(setup, out):
    for shard in setup["world"]:
        assert keys_of(out / os.path.basename(shard)) == keys_of(shard)
    assert sorted(completed(str(out))) == sorted(os.path.basename(s) for s in setup["world"])
    assert not list(out.glob("*.tmp-*")) and not list((out / "_manifest" / "_leases").iterdir())


def stage_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"stage"')]


@pytest.mark.dist
@pytest.mark.timeout(180)
def test_two_copies_started_together_share_the_work(setup, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = [tmp_path / f"copy{i}.log" for i in range(2)]
    procs = []
    for log in logs:
        with open(log, "wb") as f:
            procs.append(subprocess.Popen([str(BIN / "dalle3-recaption"), *overrides(setup, out)], env=env,
                                          stdout=f, stderr=subprocess.STDOUT))
    assert [p.wait(150) for p in procs] == [0, 0], logs[0].read_text()[-2000:] + logs[1].read_text()[-2000:]
    assert_exactly_once(setup, out)
    summaries = [stage_lines(log)[-1] for log in logs]
    assert sum(s["done"] for s in summaries) == 6 and sum(s["lost"] for s in summaries) == 0  # each shard once
    # a copy that plans after the other committed a shard finds it done ("skipped"); later, "done_by_others"
    assert all(s["done"] + s["done_by_others"] + s["skipped"] == 6 for s in summaries)
    workers = {e["worker"]["pid"] for e in completed(str(out)).values()}
    assert workers <= {p.pid for p in procs}
    assert {e["worker"]["host"] for e in completed(str(out)).values()} == {os.uname().nodename}


def _orphans(out) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if f"recaption.out_dir={out}" in (proc.info["cmdline"] or []) and "torchrun" not in " ".join(
                proc.info["cmdline"][:2]):
            found.append(proc)
    return found


@pytest.mark.dist
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_launcher_leaves_orphans_and_an_immediate_rerun_finishes_exactly_once(setup, tmp_path):
    out = tmp_path / "out"
    # batch 1 and 40 forced tokens: each shard takes ~1 s on 2 cores, so the kill lands mid-run
    extra = ("recaption.batch_size=1", "recaption.decode.max_new_tokens=40", "recaption.decode.min_new_tokens=40")
    cmd = [str(BIN / "torchrun"), "--nproc_per_node=2", "--no-python", str(BIN / "dalle3-recaption"),
           *overrides(setup, out, *extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "first.log", "wb") as log:
        launcher = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not completed(str(out)) and launcher.poll() is None:
        time.sleep(0.05)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait(10)
    orphans = _orphans(out)
    assert orphans and len(completed(str(out))) < 6, "the kill came too late to orphan a working rank"
    try:
        with open(tmp_path / "rerun.log", "wb") as log:
            rerun = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=200)
        assert rerun.returncode == 0, (tmp_path / "rerun.log").read_text()[-3000:]
        for shard in setup["world"]:  # the rerun ends only when every shard is committed, by anyone
            assert keys_of(out / os.path.basename(shard)) == keys_of(shard)
        _, alive = psutil.wait_procs(orphans, timeout=60)  # they see their shards done and finish too
        assert not alive
    finally:
        for proc in _orphans(out):
            proc.kill()
    assert_exactly_once(setup, out)
    merged = json.loads((out / "summary.json").read_text())
    assert merged["complete"] and merged["shards_lost"] == 0


def test_two_img2dataset_folders_with_the_same_shard_names_are_recaptioned_together(setup, tmp_path):
    keys = []
    for folder, first in (("a", 0), ("b", 10)):  # 0000-00000.tar, 0000-00001.tar in each (other keys)
        (tmp_path / folder).mkdir()
        for i in range(2):
            keys += write_shard(tmp_path / folder / f"0000-{i:05d}.tar", first + i, 4, fmt="jpg", size=32)
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    acquire(str(out), "b_0000-00001.tar", Holder(os.uname().nodename, dead.pid, "gone"))  # a crashed worker's lease
    spec = tmp_path / "inputs.txt"
    spec.write_text("a\nb/*.tar\n")  # a folder and a glob, through a list file
    summary = run(compose(overrides(setup, out, "recaption.num_workers=0", inputs=spec)))
    assert summary["job"]["complete"] and summary["done"] == 4
    assert sorted(f for f in os.listdir(out) if f.endswith(".tar")) == \
        ["a_0000-00000.tar", "a_0000-00001.tar", "b_0000-00000.tar", "b_0000-00001.tar"]
    entry = completed(str(out))["b_0000-00000.tar"]
    assert entry["source"]["input"]["path"] == str(tmp_path / "b" / "0000-00000.tar")
    assert entry["source"]["input"]["size"] == (tmp_path / "b" / "0000-00000.tar").stat().st_size
    cfg = compose(["experiment=smoke", "caption=dsc", f"data.val_shards={out}", "data.val_samples=1000"])
    batches = list(ShardDataModule(cfg.data, cfg.caption).val_dataloader())
    got = [k for b in batches for k in b["key"]]
    assert sorted(got) == sorted(keys) and len(keys) == 16 and sample_key(11, 3) in got
