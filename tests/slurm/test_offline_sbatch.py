"""launch/offline.sbatch as a 2-task job array: every shard is processed exactly once."""
from __future__ import annotations

import os

import pytest

from slurm_harness import stage_command
from dalle3.data.offline import completed
from dalle3.data.shards import expand_shards

pytestmark = pytest.mark.slurm


@pytest.mark.timeout(180)
def test_job_array_of_two_tasks_covers_every_shard_once(slurm, slurm_workdir, world):
    run_dir = slurm_workdir / "recaption"
    shards = expand_shards(str(world / "train"))
    assert len(shards) == 5  # odd on purpose: the two tasks get 3 and 2
    cmd, extra = stage_command("recaption")
    job = slurm.sbatch("offline.sbatch", [*extra, f"paths.data_dir={world}", f"paths.run_dir={run_dir}"],
                       slurm_workdir, options=["--array=0-1", "--nodes=1", "--ntasks-per-node=1"],
                       env=slurm.env(DALLE3_CMD=cmd))
    tasks = [slurm.array_task(job, i) for i in range(2)]
    for task in tasks:
        assert task.wait(150) == "COMPLETED", task.report()
    summaries = [s for task in tasks for s in task.summaries()]
    assert sorted((s["task_id"], s["task_count"], s["assigned"], s["done"]) for s in summaries) == \
        [(0, 2, 3, 3), (1, 2, 2, 2)], "".join(t.report() for t in tasks)
    # every shard has an output and a manifest entry ...
    assert sorted(completed(str(run_dir / "shards"))) == sorted(os.path.basename(s) for s in shards)
    # ... and was worked on by exactly one process
    calls = [line for f in sorted((run_dir / "_calls").glob("*.txt")) for line in f.read_text().split()]
    assert sorted(calls) == sorted(os.path.basename(s) for s in shards)
    assert len(list((run_dir / "_calls").glob("*.txt"))) == 2
