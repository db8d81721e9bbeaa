"""The per-shard offline job, written once: latent precompute and recaptioning.

A job maps every input shard to one output shard. What makes it safe to run on many
ranks, many array tasks, and again after a crash:

* **Splitting** is :func:`dalle3.data.shards.assign_shards` of (rank, world size,
  task id, task count): a pure function, so every process computes its own share
  without talking to the others, and no two processes own the same shard.
* **One live worker per shard** (:mod:`dalle3.data.lease`): before working on a shard a
  process takes its lease, so a second launch on the same output (a requeue, a rerun
  while the orphaned ranks of a killed launcher still work, two copies of the job)
  never does the same shard at the same time. A shard leased by a live process is
  waited for; one whose holder is gone (dead pid on this host, or no heartbeat for
  ``lease_timeout_s``) is taken over.
* **Atomic outputs**: the worker writes ``<out>.tmp-r<rank>-t<task>-<host>-<pid>-<token>``
  (unique per process) and it is renamed onto ``<out>`` only when complete, so a reader
  never sees half a shard. Committing is idempotent: a shard another process has
  committed meanwhile is verified against its manifest entry and skipped.
* **Any layout** (:func:`output_names`): outputs are named by the inputs' base names
  when those differ; otherwise (``a/00000.tar`` and ``b/00000.tar``) by each input's
  path relative to the inputs' common folder, ``/`` written ``_`` (``a_00000.tar``), so
  outputs stay one flat folder of tars that the data layer reads as is.
* **A manifest** of completed shards: one small JSON per shard under
  ``<out_dir>/_manifest/`` (one file each, so ranks never write the same file),
  written after the rename, recording the input, who did the work (``worker``: host,
  pid, rank) and the output's size. A rerun skips every shard whose manifest entry and output
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
:func:`claim_shard` (lease, or "done"/"busy"), :func:`tmp_output`, :func:`commit_shard`
(rename + manifest entry with the identity the plan took) and :func:`poll_others`.
"""
from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from dalle3.data.lease import DEFAULT_TIMEOUT_S, Heartbeat, Holder, Lease, acquire, is_free, this_process
from dalle3.data.shards import REMOTE_PREFIXES, assign_shards
from dalle3.dist.env import ArrayTask, DistEnv, array_task, dist_env
from dalle3.utils.io import atomic_write_json
from dalle3.utils.logging import get_logger

log = get_logger(__name__)
MANIFEST_DIR = "_manifest"


def output_name(shard: str) -> str:
    """Output file name of an input shard: its base name (``.../train/000003.tar`` → ``000003.tar``)."""
    return os.path.basename(shard.rstrip("/"))


def output_names(shards: Sequence[str]) -> dict[str, str]:
    """Input shard → output file name, unique over ``shards`` and a pure function of the list.

    The base name when all base names differ (so a single folder keeps its names);
    otherwise the path relative to the common folder of the local inputs, ``/`` written
    ``_`` (``a/00000.tar``, ``b/00000.tar`` → ``a_00000.tar``, ``b_00000.tar``). URLs keep
    their base name.

    Raises:
        ValueError: two inputs still map to one name (the message names both).
    """
    names = {s: output_name(s) for s in shards}
    if len(set(names.values())) < len(names):
        local = [os.path.abspath(s) for s in shards if not s.startswith(REMOTE_PREFIXES)]
        root = os.path.commonpath([os.path.dirname(p) for p in local]) if local else ""
        names = {s: output_name(s) if s.startswith(REMOTE_PREFIXES) else
                 os.path.relpath(os.path.abspath(s), root).replace(os.sep, "_") for s in shards}
    check_unique(names)
    return names


def check_unique(names: dict[str, str]) -> None:
    """A one-line ValueError naming two inputs whose outputs would collide."""
    seen: dict[str, str] = {}
    for shard, name in names.items():
        if name in seen:
            raise ValueError(f"input shards {seen[name]!r} and {shard!r} would both be written as {name!r}")
        seen[name] = shard


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


def mark_done(out_dir: str, shard: str, name: str, stats: dict, source: Optional[dict] = None,
              worker: Optional[Holder] = None) -> None:
    """Add one manifest entry (atomically); ``source``: what it was made from (default :func:`input_identity`);
    ``worker``: who did the work (default: this process)."""
    source = input_identity(shard) if source is None else source
    worker = worker or this_process(stats.get("rank", 0), stats.get("task_id", 0))
    output = os.path.join(out_dir, name)
    # the helper's tmp name does not end in .json, so completed() never reads a half-written entry
    atomic_write_json(_entry_path(out_dir, name), {
        "input": shard, "output": name, "time": time.time(), **stats, "source": source,
        "output_bytes": os.path.getsize(output) if os.path.exists(output) else None,
        "worker": {k: v for k, v in worker.record().items() if k != "proc_start"}})


def verify_committed(out_dir: str, name: str, source: Optional[dict], done_after: float = 0.0) -> Optional[dict]:
    """The manifest entry of output ``name`` if it is committed from ``source`` (and after ``done_after``), else None.

    Committed means: the entry exists, its ``source`` is ``source``, and the output exists
    with the size the entry records.
    """
    try:
        with open(_entry_path(out_dir, name), encoding="utf-8") as f:
            entry = json.load(f)
    except (FileNotFoundError, ValueError):
        return None
    try:
        size = os.path.getsize(os.path.join(out_dir, name))
    except OSError:
        return None
    if entry.get("source") != source or entry.get("output_bytes", size) not in (None, size) or \
            entry.get("time", 0.0) < done_after:
        return None
    return entry


def tmp_output(final: str, env: DistEnv, task: ArrayTask, holder: Optional[Holder] = None) -> str:
    """The temporary name a process writes ``final`` under: unique to the process (rank, task, host, pid and
    a random token, so an orphaned rank 1 and a new rank 1 never share one); never matches ``*.tar``/``*.json``."""
    holder = holder or this_process(env.rank, task.task_id)
    return f"{final}.tmp-r{env.rank}-t{task.task_id}-{holder.tag()}"


def remove_stale_tmp(final: str) -> int:
    """Delete leftover temporary outputs of ``final`` (from a killed run); return how many.

    Called by the holder of ``final``'s lease: any ``<final>.tmp-*`` file is from a
    process whose lease was taken over (gone, or presumed gone: if it still lives, its
    commit finds that it no longer holds the lease and drops its work).
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
    names: dict = field(default_factory=dict)
    "Input shard → output name, for every input shard (:func:`output_names`)."


def plan_shards(shards: Sequence[str], out_dir: str, env: DistEnv, task: ArrayTask, *,
                overwrite: bool = False, name_fn: Optional[Callable[[str], str]] = None,
                identity: Callable[[str], dict] = input_identity) -> ShardPlan:
    """This process's share of ``shards`` and which of it is left to do.

    Args:
        shards: the full, ordered input list (the same on every process).
        out_dir: output folder holding the outputs and ``_manifest/``.
        env, task: this process's place in the job (see :func:`assign_shards`).
        overwrite: redo completed shards too.
        name_fn: input shard → output file name (must be unique over ``shards``);
            default: :func:`output_names`.
        identity: input shard → what its output depends on (see :func:`input_identity`);
            a completed shard whose recorded ``source`` differs is redone.
    """
    if name_fn is None:
        names = output_names(shards)
    else:
        names = {s: name_fn(s) for s in shards}
        check_unique(names)
    mine = assign_shards(shards, env.rank, env.world_size, task.task_id, task.task_count)
    done = {} if overwrite else completed(out_dir)
    sources = {s: identity(s) for s in mine}
    finished = [s for s in mine if names[s] in done]
    changed = [s for s in finished if done[names[s]].get("source") != sources[s]]
    if changed:
        log.warning("%s: %d finished shard(s) were made from another input (or record none) and are redone, "
                    "e.g. %s", out_dir, len(changed), changed[0])
    skipped = [s for s in finished if s not in changed]
    return ShardPlan(mine, [s for s in mine if s not in skipped], skipped, changed, sources, names)


def claim_shard(out_dir: str, name: str, source: Optional[dict], holder: Holder, *,
                timeout_s: float = DEFAULT_TIMEOUT_S, done_after: float = 0.0) -> tuple[str, Optional[Lease]]:
    """Take output ``name``'s lease to work on it: ``("mine", lease)``, ``("done", None)`` or ``("busy", None)``.

    "done": committed from ``source`` (after ``done_after``: an ``overwrite`` run passes its
    start) by anyone, so there is nothing to do. "busy": a live process holds the lease.
    "mine": this process holds it; leftover temporary outputs and the old manifest entry
    are gone (a crash mid-redo must leave the shard "incomplete", not "done from the old input").
    """
    if verify_committed(out_dir, name, source, done_after) is not None:
        return "done", None
    lease = acquire(out_dir, name, holder, timeout_s)
    if lease is None:
        return "busy", None
    if verify_committed(out_dir, name, source, done_after) is not None:  # committed just before our lease
        lease.release()
        return "done", None
    remove_stale_tmp(os.path.join(out_dir, name))
    forget(out_dir, name)
    return "mine", lease


def poll_others(out_dir: str, waiting: Sequence[str], names: dict, sources: dict, *,
                timeout_s: float = DEFAULT_TIMEOUT_S, done_after: float = 0.0) -> tuple[list, list, list]:
    """One look at shards that other processes held: ``(done by them, free to claim again, still held)``."""
    done, free, held = [], [], []
    for shard in waiting:
        if verify_committed(out_dir, names[shard], sources.get(shard), done_after) is not None:
            done.append(shard)
        elif is_free(out_dir, names[shard], timeout_s):
            free.append(shard)
        else:
            held.append(shard)
    return done, free, held


def poll_interval(timeout_s: float) -> float:
    """Seconds between looks at shards others hold, and between heartbeats: well inside the timeout."""
    return min(max(timeout_s / 30.0, 0.1), 5.0)


def _discard(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def commit_shard(out_dir: str, shard: str, tmp: str, name: str, stats: dict, source: Optional[dict] = None,
                 lease: Optional[Lease] = None) -> Optional[str]:
    """Make a finished temporary output final: flush it to disk, rename it, add its manifest entry.

    Idempotent: with a ``lease`` that another process has taken over meanwhile, or a
    shard that is already committed from the same ``source``, the temporary output is
    dropped and ``None`` returned (logged), never an error. The lease is released.

    ``source``: the input identity the plan took (:attr:`ShardPlan.sources`); default: taken now.
    """
    source = input_identity(shard) if source is None else source
    try:
        if lease is not None and not lease.held():
            _discard(tmp)
            by = (verify_committed(out_dir, name, source) or {}).get("worker")
            log.warning("%s: another process took this shard over (%s); this copy of the work is dropped",
                        name, f"committed by {by}" if by else "not committed yet")
            return None
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except FileNotFoundError:
            if verify_committed(out_dir, name, source) is not None or (lease is not None and not lease.held()):
                log.warning("%s: already committed by another process; skipped", name)
                return None
            raise
        try:
            os.fsync(fd)  # a power cut after the rename must not leave a renamed but empty file
        finally:
            os.close(fd)
        final = os.path.join(out_dir, name)
        # not dalle3.utils.io: the tmp name is :func:`tmp_output`'s, which :func:`remove_stale_tmp` finds
        os.replace(tmp, final)
        mark_done(out_dir, shard, name, stats, source, lease.holder if lease is not None else None)
        return final
    finally:
        if lease is not None:
            lease.release()


def _add_totals(totals: dict, stats: dict) -> None:
    for k, v in stats.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            totals[k] = totals.get(k, 0) + v


def run_shard_job(shards: Sequence[str], out_dir: str, work: Callable[[str, str], dict], *,
                  env: Optional[DistEnv] = None, task: Optional[ArrayTask] = None,
                  name: str = "job", identity: Callable[[str], dict] = input_identity,
                  lease_timeout_s: float = DEFAULT_TIMEOUT_S) -> dict:
    """Run ``work(input_shard, tmp_output_path) -> stats`` on this process's share of ``shards``.

    Args:
        shards: the full, ordered input list (the same on every process).
        out_dir: output folder (created); outputs are named by :func:`output_names`.
        work: writes one complete output to the path it is given and returns a JSON-able
            dict of stats (e.g. ``{"samples": 1024}``).
        env, task: this process's rank layout (default: :func:`dist_env`, :func:`array_task`).
        name: used in log lines.
        identity: input shard → what its output depends on (see :func:`plan_shards`).
        lease_timeout_s: a shard lease without a heartbeat for this long is taken over.

    Returns:
        ``{"assigned", "done", "skipped", "done_by_others", "lost", "redone_input_changed", "rank",
        "world_size", "task_id", "task_count"}`` plus the sum of every numeric stat of the shards done now.
    """
    env = env or dist_env()
    task = task or array_task()
    os.makedirs(out_dir, exist_ok=True)
    try:
        plan = plan_shards(shards, out_dir, env, task, identity=identity)
    except ValueError as exn:
        raise ValueError(f"{name}: {exn}") from None
    holder = this_process(env.rank, task.task_id)
    beat = Heartbeat(poll_interval(lease_timeout_s))
    totals: dict[str, float] = {}
    counts = {"done": 0, "done_by_others": 0, "lost": 0}
    pending, waiting = list(plan.todo), []
    try:
        while pending or waiting:
            for shard in pending:
                out_name = plan.names[shard]
                state, lease = claim_shard(out_dir, out_name, plan.sources[shard], holder, timeout_s=lease_timeout_s)
                if state != "mine":
                    counts["done_by_others"] += state == "done"
                    waiting += [shard] if state == "busy" else []
                    continue
                beat.add(out_name, lease)
                final = os.path.join(out_dir, out_name)
                tmp = tmp_output(final, env, task, holder)
                t0 = time.time()
                stats = dict(work(shard, tmp) or {})
                stats["seconds"] = round(time.time() - t0, 3)
                beat.pop(out_name)  # commit closes the lease's descriptor: no refresh may use it after that
                committed = commit_shard(out_dir, shard, tmp, out_name, stats, plan.sources[shard], lease)
                if committed is None:
                    counts["lost"] += 1
                    continue
                _add_totals(totals, stats)
                counts["done"] += 1
                log.info("%s: %s → %s (%d/%d)", name, shard, final, counts["done"] + len(plan.skipped), len(plan.mine))
            if waiting:  # held by live processes: wait until they commit, or until they are gone
                time.sleep(poll_interval(lease_timeout_s))
            done, pending, waiting = poll_others(out_dir, waiting, plan.names, plan.sources, timeout_s=lease_timeout_s)
            counts["done_by_others"] += len(done)
    finally:
        beat.stop()
    return {"assigned": len(plan.mine), **counts, "skipped": len(plan.skipped),
            "redone_input_changed": len(plan.changed), "rank": env.rank, "world_size": env.world_size,
            "task_id": task.task_id, "task_count": task.task_count, **totals}
