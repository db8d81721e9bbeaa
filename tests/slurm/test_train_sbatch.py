"""launch/train.sbatch on the test cluster: 2 nodes x 1 task of DDP, and SIGUSR1 → requeue → resume."""
from __future__ import annotations

import subprocess

import pytest
import torch

from slurm_harness import stage_command

pytestmark = pytest.mark.slurm


@pytest.mark.timeout(300)
def test_two_nodes_one_task_each_train_with_ddp(slurm, slurm_workdir, world):
    run_dir = slurm_workdir / "train2n"
    cmd, extra = stage_command("train")
    job = slurm.sbatch("train.sbatch", [*extra, f"paths.data_dir={world}", f"paths.run_dir={run_dir}",
                                        "trainer=ddp", "trainer.accelerator=cpu", "trainer.max_steps=6",
                                        "trainer.progress_bar=false", "data.num_workers=0"],
                       slurm_workdir, options=["--nodes=2", "--ntasks-per-node=1"],
                       env=slurm.env(DALLE3_CMD=cmd))
    assert job.wait(270) == "COMPLETED", job.report()
    by_rank = {s["rank"]: s for s in job.summaries()}
    assert sorted(by_rank) == [0, 1], job.report()
    assert all(s["world_size"] == 2 and s["steps"] == 6 and s["strategy"] == "DDPStrategy"
               for s in by_rank.values()), job.report()
    # the sbatch line derived the layout from the allocation, and the ranks ran on both nodes
    assert "nodes node[1-2] (2 x 1 tasks" in job.text() and "trainer.num_nodes=2 trainer.devices=1" in job.text()
    if "node" in by_rank[0]:
        assert {s["node"] for s in by_rank.values()} == {"node1", "node2"}, job.report()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 6


def test_devices_override_is_refused(slurm, slurm_workdir):
    job = slurm.sbatch("train.sbatch", ["trainer.devices=4"], slurm_workdir / "refuse",
                       options=["--nodes=1", "--ntasks-per-node=1"])
    assert job.wait(60) == "FAILED"
    assert "use sbatch --ntasks-per-node" in job.text(), job.report()


@pytest.mark.timeout(300)
def test_sigusr1_requeues_and_resumes_at_the_signalled_step(slurm, slurm_workdir, world, tmp_path):
    run_dir = slurm_workdir / "requeue"
    max_steps = 24
    cmd, extra = stage_command("train", real=False)  # the toy: its steps are paced and reported
    job = slurm.sbatch("train.sbatch", [*extra, f"paths.data_dir={world}", f"paths.run_dir={run_dir}",
                                        "trainer.accelerator=cpu", f"trainer.max_steps={max_steps}",
                                        "trainer.ckpt_every_n_steps=4", "trainer.progress_bar=false"],
                       slurm_workdir, options=["--nodes=1", "--ntasks-per-node=1"],
                       env=slurm.env(DALLE3_CMD=cmd, TOY_STEP_SECONDS="0.4"))
    job.wait_for_log(r"toy step (9|1[0-9])\b", timeout=150)
    # What SLURM does at --signal=SIGUSR1@90: USR1 to every task of every step (not the batch shell).
    subprocess.run(["scancel", "--signal=USR1", job.id], check=True, timeout=30)
    job.wait_for_log(r"Requeued SLURM job", timeout=60)
    assert job.wait(200, until={"COMPLETED"}, restarts=1) == "COMPLETED", job.report()

    hpc = sorted(run_dir.glob("hpc_ckpt_*.ckpt"))
    assert hpc, "Lightning saved no HPC checkpoint on SIGUSR1" + job.report()
    signalled = torch.load(hpc[-1], map_location="cpu", weights_only=False)["global_step"]
    summaries = job.summaries()
    assert len(summaries) == 1, "only the requeued run may finish" + job.report()
    final = summaries[0]
    assert final["restart"] == 1 and final["steps"] == max_steps and final["resumed_from"], job.report()
    assert final["cluster_env"] == "SLURMEnvironment" and final["auto_requeue"], final
    resumed_at = final["start_step"]
    assert final["steps_run"] == max_steps - resumed_at and 0 < resumed_at <= signalled, job.report()
    assert resumed_at == signalled, job.report()
