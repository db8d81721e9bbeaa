"""Rank and world size from torchrun, SLURM and Lightning environments."""
from __future__ import annotations

import pytest

from dalle3.dist.env import array_task, dist_env


def test_single_process_defaults():
    env = dist_env({})
    assert (env.rank, env.world_size, env.is_rank_zero, env.source) == (0, 1, True, "single")


def test_torchrun_two_nodes_of_four():
    env = dist_env({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank, env.node_rank, env.num_nodes) == (5, 8, 1, 1, 2)
    assert not env.is_rank_zero and env.source == "torchrun"


def test_slurm_srun_tasks():
    env = dist_env({"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
                    "SLURM_NNODES": "2", "SLURM_STEP_ID": "0"})
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size, env.node_rank) == (3, 4, 1, 2, 1)
    assert env.source == "slurm"


def test_torchrun_wins_over_slurm_allocation():
    # torchrun inside an sbatch allocation: SLURM vars describe the allocation, RANK the process.
    env = dist_env({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"})
    assert (env.rank, env.world_size, env.source) == (1, 2, "torchrun")


def test_lightning_launcher_subprocess():
    env = dist_env({"LOCAL_RANK": "1", "NODE_RANK": "1", "PL_TRAINER_DEVICES": "2", "PL_TRAINER_NUM_NODES": "2"})
    assert (env.rank, env.world_size, env.source) == (3, 4, "lightning")


def test_array_task_relative_to_min_and_checked():
    assert array_task({}).task_count == 1
    t = array_task({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "2", "SLURM_ARRAY_TASK_COUNT": "4"})
    assert (t.task_id, t.task_count) == (1, 4)
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID"):
        array_task({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "2"})


def test_bad_integer_names_the_variable():
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        dist_env({"RANK": "0", "WORLD_SIZE": "two"})
