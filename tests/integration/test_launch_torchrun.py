"""launch/torchrun.sh runs a training stage on 2 local ranks (gloo) to completion."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN_SH = ROOT / "launch" / "torchrun.sh"
TOY = ROOT / "tests" / "helpers" / "toy_train.py"


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "RANK", "WORLD_SIZE"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # torchrun of this venv
    return env


@pytest.mark.dist
@pytest.mark.timeout(300)
def test_torchrun_two_ranks_finish_the_same_run(tmp_path):
    # The toy stands in for `dalle3-train stage=...` (the default DALLE3_CMD) while the
    # training stages land; the launcher path (torchrun → Lightning's torchelastic env) is the same.
    env = {**_env(), "DALLE3_CMD": f"{shlex.quote(sys.executable)} {TOY} {tmp_path}"}
    proc = subprocess.run(["bash", str(TORCHRUN_SH), "--nnodes", "1", "--nproc-per-node", "2",
                           "trainer=ddp", "trainer.accelerator=cpu", "trainer.max_steps=6"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    res = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("result_rank*.json"))]
    assert [(r["rank"], r["world"], r["step"]) for r in res] == [(0, 2, 6), (1, 2, 6)], proc.stderr[-3000:]
    assert res[0]["strategy"] == "DDPStrategy"
    assert "1 node(s) x 2 process(es)" in proc.stderr


def test_torchrun_refuses_devices_override(tmp_path):
    proc = subprocess.run(["bash", str(TORCHRUN_SH), "trainer.devices=4"], env=_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "--nproc-per-node" in proc.stderr
