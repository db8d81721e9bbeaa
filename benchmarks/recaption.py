"""Recaption job throughput vs pure caption decoding of the same captioners, in one run.

1. **pure**: both captioners (SSC + DSC) caption images already decoded in memory, in
   batches of ``--batch``: the ceiling the job can reach.
2. **job, 1 process**: ``dalle3.recaption.stage.run_recaption`` over the same images as shards on
   disk (tar read, PNG decode in DataLoader workers, tar writes, manifest), ``threads``
   torch threads. Start-up (stage start → first batch captioned: config checks, planning,
   model loads, worker start, the first decode) is reported apart from the steady state
   (images/s after the first batch), so ``overhead = 1 - job steady images/s / pure images/s``
   is the job's own cost in a long run; ``overhead_wall`` counts start-up in as well.
3. **job, 2 processes** (``--two``): two ranks (RANK/WORLD_SIZE) with half the threads
   each, so both layouts use the same total threads; ``scaling_2proc`` = their summed
   steady images/s over the 1-process job's, ``scaling_2proc_wall`` the same on wall time.
4. ``--flops MODEL``: FLOPs per image of an open_clip CoCa (random init, no download)
   for one image encode + ``--flops-tokens`` KV-cached greedy tokens, for the GPU-hours
   estimate in RESULTS.md.

    .venv/bin/python benchmarks/recaption.py [--samples 4096] [--batch 64] [--tokens 32] [--threads 2] [--two]

The last line printed is JSON with ``"overhead"``, ``"startup_s"`` and ``"scaling_2proc"``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

BIN = Path(sys.executable).parent


def setup(root: Path, samples: int, shard_size: int) -> list[str]:
    from dalle3.captioner.export import export_captioner
    from dalle3.captioner.model import build_captioner
    from dalle3.config import compose
    from dalle3.world.writer import write_split

    cfg = compose([])
    for seed, kind in enumerate(["ssc", "dsc"]):
        torch.manual_seed(seed)
        export_captioner(build_captioner(cfg.captioner), root / f"captioner_{kind}" / "export", {"target": kind})
    return write_split(str(root / "world"), "train", samples, shard_size, cfg.world, 0, workers=1, progress=False)


def overrides(root: Path, out: Path, args, threads: int, workers: int) -> list[str]:
    return ["stage=recaption", f"paths.out_dir={root}", f"paths.data_dir={root}/world", f"recaption.out_dir={out}",
            f"recaption.batch_size={args.batch}", f"recaption.decode.max_new_tokens={args.tokens}",
            f"recaption.decode.min_new_tokens={args.tokens}", f"recaption.threads={threads}",
            f"recaption.num_workers={workers}", "recaption.progress_bar=false"]


def pure(root: Path, shards: list[str], args) -> float:
    """Images/s of both captioners on in-memory images (decoded before the clock starts)."""
    from dalle3.config import compose
    from dalle3.data.pipeline import build_pipeline
    from dalle3.recaption.job import load_generators

    torch.set_num_threads(args.threads)
    cfg = compose(overrides(root, root / "unused", args, args.threads, 0))
    gens, size = load_generators(cfg.recaption, torch.device("cpu"))
    images = torch.stack([s["image"] for s in build_pipeline(shards, image_size=size)])
    with torch.inference_mode():
        for gen in gens.values():
            gen(images[: args.batch])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(images), args.batch):
            for gen in gens.values():
                gen(images[i:i + args.batch])
        return len(images) / (time.perf_counter() - t0)


def job_one(root: Path, args) -> dict:
    from dalle3.config import compose
    from dalle3.recaption.stage import run_recaption as run

    out = root / "out1"
    summary = run(compose(overrides(root, out, args, args.threads, args.workers)))
    return summary["job"]


def job_two(root: Path, args) -> dict:
    out = root / "out2"
    threads = max(args.threads // 2, 1)
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "OMP_NUM_THREADS": str(threads)}
        per_rank = max(args.workers // 2, 1) if args.workers else 0  # --workers 0: each rank decodes in its main process
        cmd = [str(BIN / "dalle3-recaption"), *overrides(root, out, args, threads, per_rank)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    assert [p.wait() for p in procs] == [0, 0]
    return json.loads((out / "summary.json").read_text())


def flops_per_image(model_name: str, tokens: int) -> dict:
    """FLOPs of one image encode + ``tokens`` KV-cached greedy steps (open_clip config, random init)."""
    import open_clip
    from torch.utils.flop_counter import FlopCounterMode

    from dalle3.captioner.generate import DecodeOptions, SpecialIds, generate

    model = open_clip.create_model(model_name).eval().requires_grad_(False)  # the FLOP counter's hooks need no-grad tensors
    tok = open_clip.get_tokenizer(model_name)
    ids = SpecialIds.from_tokenizer(tok)
    size = model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    image = torch.randn(1, 3, size, size)
    out = {"model": model_name, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
    with torch.no_grad():
        with FlopCounterMode(display=False) as enc:
            model.encode_image(image)
        with FlopCounterMode(display=False) as full:
            generate(model, image, ids, DecodeOptions(max_new_tokens=tokens, min_new_tokens=tokens))
    out.update(image_gflops=round(enc.get_total_flops() / 1e9, 2),
               caption_gflops=round(full.get_total_flops() / 1e9, 2), tokens=tokens)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=4096, help="start-up is a minor part from ~4k samples on")
    p.add_argument("--shard-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--tokens", type=int, default=32, help="tokens per caption (forced, so every run decodes as many)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--two", action="store_true", help="also run 2 processes with threads/2 each")
    p.add_argument("--flops", default="", help="open_clip CoCa name to count FLOPs per image for, e.g. coca_ViT-L-14")
    p.add_argument("--flops-tokens", type=int, default=40)
    args = p.parse_args()
    result: dict = {"benchmark": "recaption", "samples": args.samples, "batch": args.batch, "tokens": args.tokens,
                    "threads": args.threads, "workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="dalle3_bench_recaption_") as tmp:
        if args.samples <= 0:  # --samples 0: FLOPs only
            result["overhead"] = None
            tmp = None
        root = Path(tmp) if tmp else None
        shards = setup(root, args.samples, args.shard_size) if root else []
        result["pure_img_s"] = round(pure(root, shards, args), 2) if root else None
        print(json.dumps(result), flush=True)
        one = job_one(root, args) if root else None
        if one:
            result["job_1proc_img_s"] = one["images_per_s"]
            result["job_1proc_steady_img_s"] = one["steady_images_per_s"]
            result["startup_s"] = one["startup_s"]
            result["overhead"] = round(1 - one["steady_images_per_s"] / result["pure_img_s"], 3)
            result["overhead_wall"] = round(1 - one["images_per_s"] / result["pure_img_s"], 3)
            print(json.dumps(result), flush=True)
        if args.two and root:
            two = job_two(root, args)
            result["job_2proc_img_s"] = two["images_per_s"]
            result["job_2proc_steady_img_s"] = two["steady_images_per_s"]
            result["job_2proc_startup_s"] = two["startup_s"]
            result["job_2proc_per_rank"] = two["images_per_s_per_rank"]
            if one:
                result["scaling_2proc"] = round(two["steady_images_per_s"] / one["steady_images_per_s"], 3)
                result["scaling_2proc_wall"] = round(two["images_per_s"] / one["images_per_s"], 3)
    if args.flops:
        result["flops"] = flops_per_image(args.flops, args.flops_tokens)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
