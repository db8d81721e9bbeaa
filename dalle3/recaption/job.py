"""The recaption job: caption every training shard with SSC and DSC captioners (``dalle3-recaption``).

The same command runs on 1 process, under ``torchrun --nproc_per_node=N``, under
``srun`` and as a SLURM job array. No process group is created: each process reads its
place from :func:`dalle3.dist.env.dist_env` / :func:`array_task`, takes its shards with
:func:`dalle3.data.offline.plan_shards` (a pure function of rank, world size and the
shard list, minus shards completed from the same input and captioners), and works
alone, so a dead rank never blocks another and a rerun finishes whatever is left.
Each shard is worked on by one live process at a time (:mod:`dalle3.data.lease`): a
shard that another live process holds (a second copy of the job, the orphaned ranks of
a killed launcher) is waited for and then skipped once committed, or taken over when
its holder is gone. So a rank ends when its whole share is committed, by anyone.

Per rank: DataLoader workers read and decode whole shards (:mod:`dalle3.recaption.data`)
while the main process runs both captioners on each batch (each image decoded once)
and appends every sample, captioned or not, to that shard's temporary output
(:mod:`dalle3.recaption.writer`). When a shard's last sample is written and the counts
match, the output is renamed into place and its manifest entry written
(:func:`dalle3.data.offline.commit_shard`); a shard that cannot be read is recorded under
``_manifest/_failed/`` and skipped. Summaries: :mod:`dalle3.recaption.summary`.
"""
from __future__ import annotations

import os
import socket
import time
from contextlib import nullcontext
from typing import Any, Optional

from dalle3.config.recaption import CAPTIONER_KINDS
from dalle3.config.validate import ConfigError
from dalle3.data.lease import Heartbeat, Lease, lease_path, this_process
from dalle3.data.offline import MANIFEST_DIR, ShardPlan, commit_shard, poll_interval, poll_others, tmp_output
from dalle3.data.sidecar import sidecar_name
from dalle3.dist.env import ArrayTask, DistEnv
from dalle3.recaption.summary import write_json
from dalle3.utils.logging import get_logger

log = get_logger("dalle3.recaption")

NO_TIMING = {"startup_s": None, "steady_images_per_s": None}
"What a rank that captioned nothing reports for :meth:`Recaptioner.timing`."


def output_name_fn(mode: str):
    """Input shard → output file name for :func:`plan_shards`: ``None`` (its layout-aware default,
    :func:`dalle3.data.offline.output_names`) for new shards, the sidecar's name for sidecars."""
    return None if mode == "shards" else sidecar_name


def pick_device(setting: str, env: DistEnv):
    import torch

    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", env.local_rank % max(torch.cuda.device_count(), 1))


def load_generators(rc: Any, device) -> tuple[dict, int]:
    """``({kind: CaptionGenerator}, input image side)`` for the configured captioner exports."""
    from dalle3.captioner.export import load_exported
    from dalle3.captioner.generate import CaptionGenerator, DecodeOptions

    opts = DecodeOptions.from_config(rc.decode)
    generators, sizes = {}, {}
    for kind in CAPTIONER_KINDS:
        if getattr(rc, kind):
            captioner = load_exported(getattr(rc, kind), device)
            generators[kind] = CaptionGenerator(captioner.model, captioner.tokenizer, opts)
            size = captioner.model_cfg["vision_cfg"]["image_size"]
            sizes[kind] = int(size if isinstance(size, int) else size[0])
    if len(set(sizes.values())) > 1:
        raise ConfigError(f"the captioners take different image sizes {sizes}; allowed: one size, so that each "
                          "image is decoded once")
    return generators, next(iter(sizes.values()))


class Recaptioner:
    """Main-process side: caption chunks as they arrive and write, commit or abandon shard outputs."""

    def __init__(self, generators: dict, rc: Any, env: DistEnv, task: ArrayTask, device, plan: ShardPlan,
                 beat: Optional[Heartbeat] = None):
        import torch

        self.generators, self.rc, self.env, self.task, self.device = generators, rc, env, task, device
        self.sources = plan.sources
        "Input shard → the identity its manifest entry records (:attr:`ShardPlan.sources`)."
        self.names = plan.names
        self.holder = this_process(env.rank, task.task_id)
        self.beat = beat
        "Refreshes the lease of every shard in flight; ``None``: no leases (tests of the writer side)."
        self.open: dict[str, Any] = {}
        self.started: dict[str, float] = {}
        self.done: list[dict] = []
        self.failed_shards: list[dict] = []
        self.by_others = self.lost = 0
        "Shards committed by another process (so skipped here); shards whose work was dropped (taken over)."
        self.first_out: Optional[float] = None
        "When the first batch was captioned: start-up ends here, the steady state begins."
        self.first_n = 0
        self.last_out: Optional[float] = None
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(rc.precision))
        self.autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext

    def writer(self, shard: str):
        from dalle3.recaption.writer import SidecarOutput, TarOutput

        if shard not in self.open:
            name = self.names[shard]
            final = os.path.join(self.rc.out_dir, name)
            if self.beat is not None:  # the worker took the lease (and cleaned up) in this process's name
                self.beat.add(name, Lease.adopt(lease_path(self.rc.out_dir, name), self.holder))
            tmp = tmp_output(final, self.env, self.task, self.holder)
            self.open[shard] = (TarOutput if self.rc.mode == "shards" else SidecarOutput)(tmp)
            self.started[shard] = time.time()
        return self.open[shard]

    def caption(self, images) -> dict[str, list[str]]:
        import torch

        images = images.to(self.device, non_blocking=True)
        with torch.inference_mode(), self.autocast():
            return {kind: gen(images) for kind, gen in self.generators.items()}

    def add_chunk(self, chunk) -> int:
        """Caption one chunk and write all of its samples; return the number captioned."""
        out = self.writer(chunk.shard)
        captions = self.caption(chunk.images) if chunk.images is not None else {}
        by_row = {row: i for i, row in enumerate(chunk.rows)}
        for j, sample in enumerate(chunk.samples):
            i = by_row.get(j)
            out.add(sample, None if i is None else {kind: texts[i] for kind, texts in captions.items()})
        if captions:
            self.last_out = time.time()
            if self.first_out is None:
                self.first_out, self.first_n = self.last_out, len(chunk.rows)
        return len(chunk.rows)

    def timing(self, started: float, captioned: int) -> dict:
        """Start-up (stage start → first batch captioned) and steady-state images/s (the batches after it)."""
        if self.first_out is None:
            return dict(NO_TIMING)
        span = (self.last_out or self.first_out) - self.first_out
        steady = (captioned - self.first_n) / span if span > 0 else None
        return {"startup_s": round(self.first_out - started, 3),
                "steady_images_per_s": round(steady, 2) if steady is not None else None}

    def end_shard(self, end) -> None:
        """Commit a finished shard, or record it as unreadable and throw its partial output away."""
        if end.error is not None:
            self.abandon(end.shard)
            self.record_failure(end.shard, end.error)
            return
        out = self.writer(end.shard)  # an empty shard still gets its (empty) output
        del self.open[end.shard]
        out.close()
        if out.samples != end.input_samples:  # cannot happen unless the code is wrong: never commit it
            os.remove(out.path)
            self.record_failure(end.shard, f"wrote {out.samples} samples of the {end.input_samples} read")
            return
        name = self.names[end.shard]
        stats = {"mode": self.rc.mode, "input_samples": end.input_samples, **out.stats(),
                 "ignored_members": end.ignored_members, "rank": self.env.rank, "task_id": self.task.task_id,
                 "captioners": {k: getattr(self.rc, k) for k in self.generators},
                 "seconds": round(time.time() - self.started.pop(end.shard, time.time()), 3)}
        lease = self.beat.pop(name) if self.beat is not None else None
        if commit_shard(self.rc.out_dir, end.shard, out.path, name, stats, self.sources.get(end.shard),
                        lease) is None:
            self.lost += 1  # taken over while we worked: the other process's copy counts
            return
        self.clear_failure(name)
        self.done.append(stats)

    def skip(self, item) -> bool:
        """A shard a worker did not read (:class:`ShardSkip`); return whether to wait for it (held by another)."""
        self.by_others += item.state == "done"
        return item.state == "busy"

    def abandon(self, shard: str) -> None:
        out = self.open.pop(shard, None)
        self.started.pop(shard, None)
        if self.beat is not None:  # an unreadable shard may end before any chunk adopted its lease
            name = self.names[shard]
            lease = self.beat.pop(name) or Lease.adopt(lease_path(self.rc.out_dir, name), self.holder)
            lease.release()
        if out is not None:
            out.close()
            if os.path.exists(out.path):
                os.remove(out.path)

    def abandon_all(self) -> None:
        for shard in list(self.open):
            self.abandon(shard)

    def record_failure(self, shard: str, error: str) -> None:
        log.error("recaption: shard %s is unreadable and was skipped: %s", shard, error)
        entry = {"input": shard, "error": error, "rank": self.env.rank, "task_id": self.task.task_id,
                 "time": time.time()}
        write_json(os.path.join(self.rc.out_dir, MANIFEST_DIR, "_failed", self.names[shard] + ".json"), entry)
        self.failed_shards.append({"shard": shard, "error": error})

    def clear_failure(self, name: str) -> None:
        path = os.path.join(self.rc.out_dir, MANIFEST_DIR, "_failed", name + ".json")
        if os.path.exists(path):
            os.remove(path)


def make_loader(shards: list, rc: Any, image_size: int, claim=None):
    from torch.utils.data import DataLoader

    from dalle3.recaption.data import RecaptionSource

    source = RecaptionSource(shards, image_size, rc.batch_size, rc.max_pixels, claim)
    workers = min(rc.num_workers, len(shards))  # a worker owns whole shards
    return DataLoader(source, batch_size=None, num_workers=workers,
                      prefetch_factor=rc.prefetch_factor if workers else None,
                      pin_memory=False, persistent_workers=False)


def process(plan: ShardPlan, rc: Any, env: DistEnv, task: ArrayTask) -> tuple[Recaptioner, int]:
    """Caption every shard in ``plan.todo`` not done by another process; return the recaptioner and images captioned.

    Shards that a live process holds are waited for, polling their manifest entries and
    leases: committed ones are skipped, ones whose holder is gone are claimed in a next pass.
    """
    import torch
    from tqdm import tqdm

    from dalle3.recaption.data import Claimer

    if rc.threads:
        torch.set_num_threads(int(rc.threads))
    device = pick_device(rc.device, env)
    generators, image_size = load_generators(rc, device)
    timeout, poll = float(rc.lease_timeout_s), poll_interval(float(rc.lease_timeout_s))
    beat = Heartbeat(poll)
    job = Recaptioner(generators, rc, env, task, device, plan, beat)
    done_after = time.time() if rc.overwrite else 0.0  # overwrite: only what is committed from now on counts
    claim = Claimer(str(rc.out_dir), plan.names, plan.sources, job.holder, timeout, done_after)
    bar = tqdm(unit="img", desc=f"recaption t{task.task_id} r{env.rank}", position=env.local_rank,
               disable=not rc.progress_bar, dynamic_ncols=True, mininterval=1.0)
    n, pending, waiting = 0, list(plan.todo), []
    try:
        while pending or waiting:
            if pending:
                n, busy = one_pass(job, make_loader(pending, rc, image_size, claim), bar, n, len(plan.todo))
                waiting += busy
            if waiting:
                time.sleep(poll)
            done, pending, waiting = poll_others(str(rc.out_dir), waiting, plan.names, plan.sources,
                                                 timeout_s=timeout, done_after=done_after)
            job.by_others += len(done)
    finally:
        job.abandon_all()  # only after an exception: a normal end has committed every shard
        beat.stop()
        bar.close()
    return job, n


def one_pass(job: Recaptioner, loader, bar, n: int, total: int) -> tuple[int, list]:
    """Run the loader's items through ``job``; return (images captioned so far, shards held by others)."""
    from dalle3.recaption.data import ShardEnd, ShardSkip

    busy = []
    for item in loader:
        if isinstance(item, ShardSkip):
            busy += [item.shard] if job.skip(item) else []
        elif isinstance(item, ShardEnd):
            job.end_shard(item)
            bar.set_postfix(shards=f"{len(job.done) + len(job.failed_shards) + job.by_others}/{total}")
        else:
            captioned = job.add_chunk(item)
            n += captioned
            bar.update(captioned)
    return n, busy


def rank_summary(plan: ShardPlan, job: Optional[Recaptioner], env: DistEnv, task: ArrayTask,
                 started: float, finished: float, captioned: int) -> dict:
    failed: dict[str, int] = {}
    for stats in job.done if job else []:
        for reason, count in stats["failed"].items():
            failed[reason] = failed.get(reason, 0) + count
    done = job.done if job else []
    wall = finished - started
    return {"rank": env.rank, "world_size": env.world_size, "task_id": task.task_id, "task_count": task.task_count,
            "source": env.source, "host": socket.gethostname(), "pid": os.getpid(),
            "assigned": len(plan.mine), "done": len(done), "skipped": len(plan.skipped),
            "done_by_others": job.by_others if job else 0, "lost": job.lost if job else 0,
            "redone_input_changed": len(plan.changed),
            "failed_shards": job.failed_shards if job else [],
            "input_samples": sum(s["input_samples"] for s in done),
            "output_samples": sum(s["output_samples"] for s in done),
            "captioned": captioned, "failed": failed, "started": started, "finished": finished,
            "wall_s": round(wall, 3), "images_per_s": round(captioned / wall, 2) if wall > 0 else 0.0,
            **(job.timing(started, captioned) if job else NO_TIMING)}
