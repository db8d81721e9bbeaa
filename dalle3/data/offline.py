"""The per-shard offline job, written once: latent precompute and recaptioning.

A job maps every input shard to one output shard. What makes it safe to run on many
ranks, many array tasks, and again after a crash:

* **Splitting** is :func:`dalle3.data.shards.assign_shards` of (rank, world size,
  task id, task count): a pure function, so every process computes its own share
  without talking to the others, and no two processes own the same shard.
* **Atomic outputs**: the worker writes ``<out>.tmp-r<rank>`` and it is renamed onto
  ``<out>`` only when complete, so a reader never sees half a shard.
* **A manifest** of completed shards: one small JSON per shard under
  ``<out_dir>/_manifest/`` (one file each, so ranks never write the same file),
  written after the rename. A rerun skips every shard whose manifest entry and output
  both exist, and redoes the rest (an output without an entry is redone: the rename
  may have happened just before a crash, which is harmless).
* **Same input, or redo**: each entry records ``source``, the identity of what the
  output was made from (:func:`input_identity`: the input's absolute path, size and
  mtime, plus whatever else the job says it depends on, e.g. sidecars or a VAE). A
  finished shard is skipped only if that identity is unchanged; otherwise (or for an
  older entry without one) it is redone, and the plan logs how many. So latents made
  from the raw world are never reused for recaptioned shards of the same base name.

Usage::

    def work(src_shard, tmp_out) -> dict:   # write tmp_out, return stats
        ...
    summary = run_shard_job(shards, out_dir, work)

A job that keeps several shards in flight at once (the recaption job: DataLoader
workers read different shards while the model runs) uses the same pieces directly:
:func:`plan_shards` (this process's share, minus what is done with the same input),
:func:`tmp_output`, :func:`remove_stale_tmp` and :func:`commit_shard` (rename +
manifest entry with the identity the plan took).
"""
from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from dalle3.data.shards import REMOTE_PREFIXES, assign_shards
from dalle3.dist.env import ArrayTask, DistEnv, array_task, dist_env
from dalle3.utils.io import atomic_write_json
from dalle3.utils.logging import get_logger

log = get_logger(__name__)
MANIFEST_DIR = "_manifest"


def output_name(shard: str) -> str:
    """Output file name of an input shard: its base name (``.../train/000003.tar`` → ``000003.tar``)."""
    return os.path.basename(shard.rstrip("/"))


def path_identity(path: str) -> dict[str, Any]:
    """Cheap identity of a local file or folder: absolute path, size and ``mtime_ns`` (a URL: itself).

    A folder (a model export) is identified by its top-level files. A path that does not
    exist is identified by its name alone. Values are JSON-native, so an identity read
    back from a manifest entry compares equal to a fresh one.
    """
    if path.startswith(REMOTE_PREFIXES):
        return {"url": path}
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except OSError:
        return {"path": path}
    if not os.path.isdir(path):
        return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    files = {}
    for name in sorted(os.listdir(path)):
        try:
            fst = os.stat(os.path.join(path, name))
        except OSError:
            continue
        if not os.path.isdir(os.path.join(path, name)):
            files[name] = [fst.st_size, fst.st_mtime_ns]
    return {"path": path, "files": files}


def input_identity(shard: str, **depends_on: Any) -> dict[str, Any]:
    """What an output made from ``shard`` depends on: the shard's :func:`path_identity`, plus ``depends_on``
    (JSON-native values, e.g. ``sidecar=path_identity(...)``)."""
    return {"input": path_identity(shard), **depends_on}


def _entry_path(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, MANIFEST_DIR, f"{name}.json")


def completed(out_dir: str) -> dict[str, dict]:
    """The manifest: ``{output name: entry}`` of every completed shard whose output exists."""
    folder = os.path.join(out_dir, MANIFEST_DIR)
    if not os.path.isdir(folder):
        return {}
    out = {}
    for fname in sorted(os.listdir(folder)):
        if not fname.endswith(".json"):
            continue
        with open(os.path.join(folder, fname), encoding="utf-8") as f:
            entry = json.load(f)
        if os.path.exists(os.path.join(out_dir, entry["output"])):
            out[entry["output"]] = entry
    return out


def mark_done(out_dir: str, shard: str, name: str, stats: dict, source: Optional[dict] = None) -> None:
    """Add one manifest entry (atomically); ``source``: what it was made from (default :func:`input_identity`)."""
    source = input_identity(shard) if source is None else source
    # the helper's tmp name does not end in .json, so completed() never reads a half-written entry
    atomic_write_json(_entry_path(out_dir, name), {"input": shard, "output": name, "time": time.time(), **stats,
                                                   "source": source})


def tmp_output(final: str, env: DistEnv, task: ArrayTask) -> str:
    """The temporary name a process writes ``final`` under (never matches ``*.tar`` or ``*.json``)."""
    return f"{final}.tmp-r{env.rank}-t{task.task_id}"


def remove_stale_tmp(final: str) -> int:
    """Delete leftover temporary outputs of ``final`` (from a killed run); return how many.

    Safe because a shard has exactly one owner per layout: when its owner starts it, any
    other ``<final>.tmp-*`` file is from a process that died.
    """
    n = 0
    for path in glob.glob(glob.escape(final) + ".tmp-*"):
        try:
            os.remove(path)
            n += 1
        except FileNotFoundError:
            pass
    return n


def forget(out_dir: str, name: str) -> None:
    """Drop the manifest entry of output ``name`` (an ``overwrite`` redo starts as "incomplete")."""
    try:
        os.remove(_entry_path(out_dir, name))
    except FileNotFoundError:
        pass


@dataclass(frozen=True)
class ShardPlan:
    mine: list
    "Every shard this process owns."
    todo: list
    "Owned shards still to do (all of them with ``overwrite``)."
    skipped: list
    "Owned shards already complete from the same input (output and matching manifest entry present)."
    changed: list = field(default_factory=list)
    "Owned shards in ``todo`` that were complete, but from another input (or an entry without ``source``)."
    sources: dict = field(default_factory=dict)
    "Owned shard → its identity, taken before any work; :func:`commit_shard` records it."


def plan_shards(shards: Sequence[str], out_dir: str, env: DistEnv, task: ArrayTask, *,
                overwrite: bool = False, name_fn: Callable[[str], str] = output_name,
                identity: Callable[[str], dict] = input_identity) -> ShardPlan:
    """This process's share of ``shards`` and which of it is left to do.

    Args:
        shards: the full, ordered input list (the same on every process).
        out_dir: output folder holding the outputs and ``_manifest/``.
        env, task: this process's place in the job (see :func:`assign_shards`).
        overwrite: redo completed shards too.
        name_fn: input shard → output file name (unique over ``shards``).
        identity: input shard → what its output depends on (see :func:`input_identity`);
            a completed shard whose recorded ``source`` differs is redone.
    """
    names = [name_fn(s) for s in shards]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"input shards share the base name {dup!r}, so their outputs would collide")
    mine = assign_shards(shards, env.rank, env.world_size, task.task_id, task.task_count)
    done = {} if overwrite else completed(out_dir)
    sources = {s: identity(s) for s in mine}
    finished = [s for s in mine if name_fn(s) in done]
    changed = [s for s in finished if done[name_fn(s)].get("source") != sources[s]]
    if changed:
        log.warning("%s: %d finished shard(s) were made from another input (or record none) and are redone, "
                    "e.g. %s", out_dir, len(changed), changed[0])
    skipped = [s for s in finished if s not in changed]
    return ShardPlan(mine, [s for s in mine if s not in skipped], skipped, changed, sources)


def commit_shard(out_dir: str, shard: str, tmp: str, name: str, stats: dict, source: Optional[dict] = None) -> str:
    """Make a finished temporary output final: flush it to disk, rename it, add its manifest entry.

    ``source``: the input identity the plan took (:attr:`ShardPlan.sources`); default: taken now.
    """
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)  # a power cut after the rename must not leave a renamed but empty file
    finally:
        os.close(fd)
    final = os.path.join(out_dir, name)
    # not dalle3.utils.io: the caller (maybe another process) wrote ``tmp`` under the
    # rank/task name of :func:`tmp_output`, which :func:`remove_stale_tmp` finds by pattern
    os.replace(tmp, final)
    mark_done(out_dir, shard, name, stats, source)
    return final


def run_shard_job(shards: Sequence[str], out_dir: str, work: Callable[[str, str], dict], *,
                  env: Optional[DistEnv] = None, task: Optional[ArrayTask] = None,
                  name: str = "job", identity: Callable[[str], dict] = input_identity) -> dict:
    """Run ``work(input_shard, tmp_output_path) -> stats`` on this process's share of ``shards``.

    Args:
        shards: the full, ordered input list (the same on every process).
        out_dir: output folder (created); outputs are named by :func:`output_name`.
        work: writes one complete output to the path it is given and returns a JSON-able
            dict of stats (e.g. ``{"samples": 1024}``).
        env, task: this process's rank layout (default: :func:`dist_env`, :func:`array_task`).
        name: used in log lines.
        identity: input shard → what its output depends on (see :func:`plan_shards`).

    Returns:
        ``{"assigned", "done", "skipped", "redone_input_changed", "rank", "world_size",
        "task_id", "task_count"}`` plus the sum of every numeric stat of the shards done now.
    """
    env = env or dist_env()
    task = task or array_task()
    os.makedirs(out_dir, exist_ok=True)
    try:
        plan = plan_shards(shards, out_dir, env, task, identity=identity)
    except ValueError as exn:
        raise ValueError(f"{name}: {exn}") from None
    totals: dict[str, float] = {}
    n_done = 0
    for shard in plan.todo:
        out_name = output_name(shard)
        forget(out_dir, out_name)  # a crash mid-redo must leave it "incomplete", not "done from the old input"
        final = os.path.join(out_dir, out_name)
        tmp = tmp_output(final, env, task)
        t0 = time.time()
        stats = dict(work(shard, tmp) or {})
        stats["seconds"] = round(time.time() - t0, 3)
        commit_shard(out_dir, shard, tmp, out_name, stats, plan.sources[shard])
        for k, v in stats.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                totals[k] = totals.get(k, 0) + v
        n_done += 1
        log.info("%s: %s → %s (%d/%d)", name, shard, final, n_done + len(plan.skipped), len(plan.mine))
    return {"assigned": len(plan.mine), "done": n_done, "skipped": len(plan.skipped),
            "redone_input_changed": len(plan.changed), "rank": env.rank, "world_size": env.world_size,
            "task_id": task.task_id, "task_count": task.task_count, **totals}
