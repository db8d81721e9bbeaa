"""Strategies from conf/trainer run on the CPU with 2 processes, save and resume."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dalle3.config import compose
from dalle3.dist.strategy import CPUDeepSpeedStrategy, build_strategy, deepspeed_config

TOY = Path(__file__).resolve().parents[1] / "helpers" / "toy_train.py"


def _train(out: Path, *overrides: str) -> list[dict]:
    proc = subprocess.run([sys.executable, str(TOY), str(out), *overrides], capture_output=True, text=True,
                          timeout=420)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(p.read_text()) for p in sorted(out.glob("result_rank*.json"))]


def test_trainer_groups_build_the_right_strategy():
    assert isinstance(build_strategy(compose(["trainer=deepspeed_zero2", "trainer.accelerator=cpu"]).trainer),
                      CPUDeepSpeedStrategy)
    z3 = deepspeed_config(compose(["trainer=deepspeed_zero3_offload"]).trainer)["zero_optimization"]
    assert z3["stage"] == 3 and z3["offload_param"]["device"] == "cpu"
    assert build_strategy(compose(["trainer=cpu"]).trainer) == "auto"


@pytest.mark.dist
@pytest.mark.slow
def test_zero2_two_ranks_saves_and_resumes(tmp_path):
    first = _train(tmp_path, "trainer=deepspeed_zero2", "trainer.accelerator=cpu", "trainer.max_steps=10",
                   "trainer.ckpt_every_n_steps=5")
    assert [r["rank"] for r in first] == [0, 1] and all(r["world"] == 2 for r in first)
    assert all(r["strategy"] == "CPUDeepSpeedStrategy" and r["step"] == 10 for r in first)
    assert (tmp_path / "checkpoints" / "last.ckpt" / "latest").exists()  # a DeepSpeed checkpoint folder
    again = _train(tmp_path, "trainer=deepspeed_zero2", "trainer.accelerator=cpu", "trainer.max_steps=16",
                   "trainer.ckpt_every_n_steps=5")
    assert all(r["step"] == 16 and r["calls"] == 6 for r in again)  # continued at step 10


@pytest.mark.dist
def test_ddp_two_ranks_on_cpu(tmp_path):
    res = _train(tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "trainer.max_steps=8")
    assert [(r["rank"], r["world"], r["step"]) for r in res] == [(0, 2, 8), (1, 2, 8)]
    assert res[0]["strategy"] == "DDPStrategy"
