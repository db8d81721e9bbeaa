"""2-process DDP on the CPU over 3 shards (uneven per rank): finishes, and ranks read disjoint shards."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.shards import shard_of, write_shards

SCRIPT = Path(__file__).resolve().parents[1] / "helpers" / "ddp_data_run.py"
TIMEOUT_S = 180


def run_ddp(shards: Path, out: Path, resampled: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(shards), str(out), "--resampled", str(int(resampled))],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher's rank-1 child is in the same session
        output, _ = proc.communicate()
        pytest.fail(f"DDP run hung for {TIMEOUT_S} s:\n{output[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, output)


@pytest.mark.dist
@pytest.mark.parametrize("resampled", [True, False])
def test_ddp_over_three_shards_finishes_and_ranks_read_disjoint_shards(tmp_path, resampled):
    shards, out = tmp_path / "shards", tmp_path / "out"
    out.mkdir()
    write_shards(shards, 3, 16, size=32, bad={7: "bad_json"})
    result = run_ddp(shards, out, resampled)
    assert result.returncode == 0, result.stdout[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    own = {0: {0, 2}, 1: {1}}  # assign_shards: shard i -> rank i % 2; rank 0 has twice the data
    for rec in ranks:
        assert rec["world"] == 2 and rec["batches_per_epoch"] == 64 // 2 // 4
        assert {shard_of(k) for k in rec["train_keys"]} <= own[rec["rank"]]
        assert len(rec["train_keys"]) == 20 * 4  # max_steps x per-device batch: nobody waited or starved
        assert rec["epochs"].count(0) == 8 and rec["epochs"].count(2) == 4
        assert {shard_of(k) for k in rec["val_keys"]} <= own[rec["rank"]]
        assert rec["n_skipped"] >= 0
    assert {shard_of(k) for k in ranks[0]["train_keys"]} == {0, 2}
    assert not set(ranks[0]["val_keys"]) & set(ranks[1]["val_keys"])
    assert len(ranks[0]["val_keys"]) == len(ranks[1]["val_keys"]) > 0
    assert "data epoch 0: 64 samples" in result.stdout  # DataStats: summed over both ranks
