"""Throughput of ShardDataModule's train loader vs a bare tarfile+PIL loop.

Both read the same PNG shards with the same number of (persistent) DataLoader workers
and turn each PNG into the same float tensor with the same function (PIL decode,
``dalle3.data.decode.decode_image``); the bare loop does nothing else (no captions,
JSON, shuffling, caption blend, skip bookkeeping), so the ratio is the cost of our
pipeline around the decode.

    .venv/bin/python benchmarks/data_loader.py [--samples 4096] [--workers 2] [--repeats 3]

The last line printed is JSON: {"benchmark": "data_loader", "ours_img_s", "bare_img_s", "ratio"}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.shards import write_shards  # noqa: E402

from dalle3.config.schema import CaptionConfig, DataConfig  # noqa: E402
from dalle3.data.datamodule import ShardDataModule  # noqa: E402
from dalle3.data.decode import decode_image  # noqa: E402


class BareTars(IterableDataset):
    """Each worker reads every num_workers-th tar with tarfile and decodes its PNGs.

    Decoding uses the very function our pipeline uses (PIL → float CHW tensor), so the
    two contenders differ only in what the pipeline adds around it.
    """

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for path in self.paths[worker::workers]:
            with tarfile.open(path, "r|") as tar:
                for member in tar:
                    if member.name.endswith(".png"):
                        yield decode_image(tar.extractfile(member).read(), 64)


def cpu_seconds() -> float:
    """CPU time of this process and its live children (the DataLoader workers)."""
    try:
        import psutil
    except ImportError:
        return float("nan")
    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    return sum(sum(p.cpu_times()[:2]) for p in procs if p.is_running())


def one_pass(loader, batch_key=None) -> tuple[float, float]:
    """(images/s wall clock, CPU ms per image) over one pass of the loader."""
    start, cpu, n = time.perf_counter(), cpu_seconds(), 0
    for batch in loader:
        n += len(batch[batch_key] if batch_key else batch)
    return n / (time.perf_counter() - start), 1e3 * (cpu_seconds() - cpu) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096, help="samples written (16 shards)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs; the best of each is kept")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        paths, _ = write_shards(tmp, 16, args.samples // 16, fmt="png", size=64)
        for path in paths:  # page cache warm for both contenders
            Path(path).read_bytes()
        data = DataConfig(train_shards=tmp, val_shards="", global_batch_size=args.batch, num_workers=args.workers,
                          epoch_samples=args.samples, resampled=True, shuffle_buffer=1000, image_size=64)
        module = ShardDataModule(data, CaptionConfig(source="blend", ratio=0.95))
        ours_loader = module.train_dataloader()
        bare_loader = DataLoader(BareTars(paths), batch_size=args.batch, num_workers=args.workers,
                                 persistent_workers=args.workers > 0)
        # untimed first pass: starts the (persistent) workers and fills our shuffle buffer
        one_pass(ours_loader, "image"), one_pass(bare_loader)
        ours, bare = [], []
        for _ in range(args.repeats):  # alternate, so load from other processes hits both alike
            ours.append(one_pass(ours_loader, "image"))
            bare.append(one_pass(bare_loader))
    ours_best, bare_best = max(r[0] for r in ours), max(r[0] for r in bare)
    print(f"samples={args.samples} workers={args.workers} batch={args.batch} repeats={args.repeats} "
          f"(best of the repeats; CPU ms/img = all processes)")
    for name, runs, best in (("ours (ShardDataModule train loader)", ours, ours_best),
                             ("bare (tarfile + same decode)", bare, bare_best)):
        print(f"{name:36s} {best:7.0f} img/s  runs: {[round(r[0]) for r in runs]}  "
              f"CPU ms/img: {min(r[1] for r in runs):.3f}")
    paired = statistics.median(o[0] / b[0] for o, b in zip(ours, bare))
    cpu_ratio = min(r[1] for r in bare) / min(r[1] for r in ours)
    print(f"ratio ours/bare: {ours_best / bare_best:.3f} (best runs); {paired:.3f} (median of back-to-back pairs); "
          f"{cpu_ratio:.3f} (CPU per image, bare/ours)")
    print(json.dumps({"benchmark": "data_loader", "ours_img_s": round(ours_best, 1), "bare_img_s": round(bare_best, 1),
                      "ratio": round(ours_best / bare_best, 3), "ratio_paired_median": round(paired, 3),
                      "cpu_ratio": round(cpu_ratio, 3)}))


if __name__ == "__main__":
    main()
