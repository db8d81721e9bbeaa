"""A Hydra -m sweep over two blend ratios through hydra/launcher=slurm (submitit)."""
from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from slurm_harness import stage_command

pytestmark = pytest.mark.slurm


@pytest.mark.timeout(300)
def test_multirun_over_two_ratios_on_slurm(slurm, slurm_workdir, world):
    out = slurm_workdir / "sweep"
    cmd, extra = stage_command("train", real=False)  # launcher mechanics; the toy reports its ratio
    argv = [*shlex.split(cmd), "-m", "hydra/launcher=slurm", *extra, "caption.ratio=0.5,0.95",
            f"paths.data_dir={world}", f"paths.out_dir={out}", "paths.run_dir=${paths.out_dir}/ratio${caption.ratio}",
            "trainer.accelerator=cpu", "trainer.max_steps=4", "trainer.progress_bar=false", "data.num_workers=0",
            # CPU nodes, small jobs: the rest of conf/hydra/launcher/slurm.yaml is used as shipped
            "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10"]
    proc = subprocess.run(argv, env=slurm.env(), cwd=slurm_workdir, capture_output=True, text=True, timeout=280)
    logs = "".join(f"\n--- {p}\n{p.read_text()[-3000:]}" for p in sorted(out.glob("multirun/*/.submitit/*/*.out")))
    logs += "".join(f"\n--- {p}\n{p.read_text()[-3000:]}" for p in sorted(out.glob("multirun/*/.submitit/*/*.err")))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:] + logs
    assert "Submitit 'slurm' sweep output dir" in proc.stdout + proc.stderr, proc.stderr[-2000:]
    for ratio in (0.5, 0.95):
        summary = json.loads((out / f"ratio{ratio}" / "summary_rank0_restart0.json").read_text())
        # each point ran as its own SLURM job (Lightning's SLURM environment) with its own ratio
        assert summary["ratio"] == ratio and summary["steps"] == 4, summary
        assert summary["cluster_env"] == "SLURMEnvironment" and summary["node"], summary
    # one job array of two points; nodes and tasks per node come from trainer.num_nodes / trainer.devices
    sbatch = [p.read_text() for p in out.glob("multirun/*/.submitit/*/*_submission.sh")]
    assert len(sbatch) == 1, sbatch
    for line in ("--array=0-1", "--nodes=1", "--ntasks-per-node=1", "--signal=USR2@90"):
        assert f"#SBATCH {line}" in sbatch[0], sbatch[0]
