"""Stand-in for ``dalle3-recaption`` (issue #4) in the job-array test until that job lands.

It has the real job's shape: a Hydra main over the root config that lists
``data.train_shards`` and runs :func:`dalle3.data.offline.run_shard_job` — the shared
per-shard runner that splits by (rank, world size, array task id, array task count) —
with a work function that copies each shard and counts its samples instead of
captioning it. Output goes to ``<paths.run_dir>/shards``. It prints the runner's summary
as the CLI does, and appends every shard it processed to ``<run_dir>/_calls/`` so a test
can prove that no shard was done twice.
"""
from __future__ import annotations

import json
import os
import shutil
import tarfile

import hydra
from omegaconf import DictConfig

from dalle3.config import CONF_DIR, register_configs
from dalle3.data.offline import run_shard_job
from dalle3.data.shards import expand_shards
from dalle3.dist.env import array_task, dist_env

register_configs()


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    env, task = dist_env(use_torch=False), array_task()
    me = f"task{task.task_id}-rank{env.rank}"
    calls = os.path.join(cfg.paths.run_dir, "_calls")
    os.makedirs(calls, exist_ok=True)

    def work(shard: str, tmp_out: str) -> dict:
        shutil.copyfile(shard, tmp_out)
        with tarfile.open(shard) as tar:
            samples = len({m.name.split(".", 1)[0] for m in tar.getmembers()})
        with open(os.path.join(calls, f"{me}.txt"), "a", encoding="utf-8") as f:
            f.write(os.path.basename(shard) + "\n")
        return {"samples": samples}

    summary = run_shard_job(expand_shards(cfg.data.train_shards), os.path.join(cfg.paths.run_dir, "shards"), work,
                            env=env, task=task, name="offline-standin")
    print(json.dumps({"stage": "recaption-standin", "node": os.environ.get("SLURMD_NODENAME"), **summary}), flush=True)


if __name__ == "__main__":
    main()
