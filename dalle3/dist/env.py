"""Rank and world size, answered in one place.

Understands, in order: an initialised ``torch.distributed`` process group, torchrun
(``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), SLURM (``SLURM_PROCID``/``SLURM_NTASKS``) and
Lightning's own launcher (``LOCAL_RANK`` + ``NODE_RANK`` with the Trainer's layout).
Everything else in dalle3 asks :func:`dist_env` instead of reading the environment.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    num_nodes: int = 1
    source: str = "single"
    """Where the answer came from: torch.distributed | torchrun | slurm | lightning | single."""

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    value = env.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {key}={value!r} is not an integer") from exc


def dist_env(environ: Optional[Mapping[str, str]] = None, use_torch: bool = True) -> DistEnv:
    """Return this process's place in the job.

    Args:
        environ: environment to read (default ``os.environ``); tests pass a dict.
        use_torch: prefer an initialised ``torch.distributed`` group when there is one.
    """
    env = os.environ if environ is None else environ
    if use_torch and environ is None:
        import torch.distributed as tdist

        if tdist.is_available() and tdist.is_initialized():
            local_ws = _int(env, "LOCAL_WORLD_SIZE", tdist.get_world_size())
            rank = tdist.get_rank()
            return DistEnv(rank, tdist.get_world_size(), _int(env, "LOCAL_RANK", 0), local_ws,
                           rank // max(local_ws, 1), max(tdist.get_world_size() // max(local_ws, 1), 1),
                           "torch.distributed")
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun / torch.distributed.launch
        ws = _int(env, "WORLD_SIZE", 1)
        local_ws = _int(env, "LOCAL_WORLD_SIZE", ws)
        return DistEnv(_int(env, "RANK", 0), ws, _int(env, "LOCAL_RANK", 0), local_ws,
                       _int(env, "GROUP_RANK", _int(env, "NODE_RANK", 0)), max(ws // max(local_ws, 1), 1),
                       "torchrun")
    if "SLURM_PROCID" in env and _int(env, "SLURM_NTASKS", 1) > 1 or (
        "SLURM_PROCID" in env and "SLURM_STEP_ID" in env
    ):
        ws = _int(env, "SLURM_NTASKS", 1)
        nnodes = _int(env, "SLURM_NNODES", _int(env, "SLURM_JOB_NUM_NODES", 1))
        return DistEnv(_int(env, "SLURM_PROCID", 0), ws, _int(env, "SLURM_LOCALID", 0),
                       max(ws // max(nnodes, 1), 1), _int(env, "SLURM_NODEID", 0), nnodes, "slurm")
    if "LOCAL_RANK" in env and "PL_TRAINER_DEVICES" in env:  # Lightning's subprocess launcher
        devices = _int(env, "PL_TRAINER_DEVICES", 1)
        nnodes = _int(env, "PL_TRAINER_NUM_NODES", 1)
        local, node = _int(env, "LOCAL_RANK", 0), _int(env, "NODE_RANK", 0)
        return DistEnv(node * devices + local, devices * nnodes, local, devices, node, nnodes, "lightning")
    return DistEnv()


@dataclass(frozen=True)
class ArrayTask:
    """A SLURM job-array task: a further split on top of the ranks of one task."""

    task_id: int = 0
    task_count: int = 1


def array_task(environ: Optional[Mapping[str, str]] = None) -> ArrayTask:
    """Read ``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT`` (one task when absent).

    The task index is taken relative to ``SLURM_ARRAY_TASK_MIN`` so ``--array=1-4`` works.
    """
    env = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" not in env:
        return ArrayTask()
    tid = _int(env, "SLURM_ARRAY_TASK_ID", 0) - _int(env, "SLURM_ARRAY_TASK_MIN", 0)
    count = _int(env, "SLURM_ARRAY_TASK_COUNT", 1)
    if not 0 <= tid < count:
        raise ValueError(f"SLURM_ARRAY_TASK_ID={tid} is outside 0..{count - 1}")
    return ArrayTask(tid, count)
