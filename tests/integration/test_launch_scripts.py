"""launch/*.sbatch and the Hydra launcher configs, without a cluster.

The sbatch scripts run under bash with the variables SLURM would set and a stub `srun`
that prints the command it was given; the real submissions are in tests/slurm/.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from dalle3.config import compose

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"


@pytest.fixture
def fake_srun(tmp_path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text('#!/bin/sh\necho "SRUN $*"\n')
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _run(script: str, args: list[str], bin_dir: Path, **slurm: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update({"PATH": f"{bin_dir}:{env['PATH']}", "SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "gpu[1-2]",
                "SLURM_CPUS_PER_TASK": "8", "SLURM_NTASKS": "8", **slurm})
    return subprocess.run(["bash", str(LAUNCH / script), *args], env=env, capture_output=True, text=True,
                          timeout=30)


def _srun_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SRUN ")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    return lines[0]


def test_train_sbatch_derives_the_layout_from_the_allocation(fake_srun):
    proc = _run("train.sbatch", ["stage=ldm", "trainer=deepspeed_zero2"], fake_srun,
                SLURM_NNODES="2", SLURM_NTASKS_PER_NODE="4", SLURM_GPUS_PER_NODE="a100:4")
    assert proc.returncode == 0, proc.stderr
    line = _srun_line(proc)
    # overrides pass through untouched, the layout comes last so nothing can override it
    assert line.endswith("dalle3-train stage=ldm trainer=deepspeed_zero2 trainer.num_nodes=2 trainer.devices=4")
    assert "--cpus-per-task=8" in line and "--kill-on-bad-exit=1" in line


@pytest.mark.parametrize("slurm, message", [
    ({"SLURM_NNODES": "1", "SLURM_NTASKS_PER_NODE": "4", "SLURM_GPUS_PER_NODE": "8"}, "one task per GPU"),
    ({"SLURM_NNODES": "1"}, "--ntasks-per-node"),
])
def test_train_sbatch_refuses_a_layout_lightning_would_hang_on(fake_srun, slurm, message):
    proc = _run("train.sbatch", ["stage=ldm"], fake_srun, **slurm)
    assert proc.returncode == 2 and message in proc.stderr and "SRUN" not in proc.stdout


def test_train_sbatch_runs_on_cpu_nodes(fake_srun):
    proc = _run("train.sbatch", ["stage=vae", "trainer.accelerator=cpu"], fake_srun,
                SLURM_NNODES="1", SLURM_NTASKS_PER_NODE="2", SLURM_GPUS_PER_NODE="0")
    assert proc.returncode == 0, proc.stderr
    assert _srun_line(proc).endswith("trainer.num_nodes=1 trainer.devices=2")


@pytest.mark.parametrize("args, command", [
    (["paths.data_dir=/shared/world"], "dalle3-recaption paths.data_dir=/shared/world"),
    (["stage=latents"], "dalle3-train stage=latents"),
])
def test_offline_sbatch_picks_the_entry_point_from_the_stage(fake_srun, args, command):
    proc = _run("offline.sbatch", args, fake_srun, SLURM_NNODES="1", SLURM_NTASKS_PER_NODE="8",
                SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_COUNT="8")
    assert proc.returncode == 0, proc.stderr
    assert _srun_line(proc).endswith(command)
    assert "array 3/8" in proc.stdout


def test_offline_sbatch_refuses_a_training_stage(fake_srun):
    proc = _run("offline.sbatch", ["stage=ldm"], fake_srun)
    assert proc.returncode == 2 and "recaption | latents" in proc.stderr


@pytest.mark.parametrize("script", ["train.sbatch", "offline.sbatch"])
def test_sbatch_headers_ask_for_what_requeue_needs(script):
    header = "\n".join(line for line in (LAUNCH / script).read_text().splitlines() if line.startswith("#SBATCH"))
    for option in ("--requeue", "--open-mode=append", "--ntasks-per-node", "--gpus-per-node", "--cpus-per-task"):
        assert f"#SBATCH {option}" in header, (script, option)
    if script == "train.sbatch":
        assert "#SBATCH --signal=SIGUSR1@90" in header
    # rule 16: no hyperparameters in launch scripts
    assert not re.search(r"\b(lr|learning_rate|batch_size|max_steps|ratio)\s*=", (LAUNCH / script).read_text())


def test_slurm_launcher_takes_nodes_and_tasks_from_the_trainer():
    cfg = compose(["hydra/launcher=slurm", "trainer=gpu", "trainer.num_nodes=2", "hydra.launcher.partition=gpu"],
                  return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)
    assert launcher.partition == "gpu" and launcher.signal_delay_s == 90


def test_local_launcher_runs_one_process_per_point():
    launcher = compose(["hydra/launcher=local"], return_hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert (launcher.nodes, launcher.tasks_per_node) == (1, 1)
