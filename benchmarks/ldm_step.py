"""LDM training-step benchmark: Lightning overhead and the precomputed-latent speed-up.

Measures on one machine, one U-Net, one text encoder and one batch size:

* ``ours_latents``: our ``LatentDiffusionModule`` under our ``fit`` (the real Trainer,
  logger, EMA callback, gradient clipping), fed fixed in-memory latent batches;
* ``bare``: the same arithmetic as a plain PyTorch loop in the style of diffusers'
  ``train_text_to_image.py`` (tokenise, encode text, sample latents, add noise, U-Net,
  MSE, backward, clip, AdamW, LR schedule, diffusers ``EMAModel``), same batches;
* ``ours_shards_latents`` / ``ours_shards_images``: our step reading real shards,
  latent shards (precomputed) vs image shards VAE-encoded on the fly;
* ``ours_shards_text``: our step reading latent shards that also hold the captions'
  text embeddings (``ldm.latents.precompute_text``), so the text encoder does not run.

Each is timed per step (median of the steps after warm-up), in interleaved rounds so
load from other processes hits all variants alike; the medians over rounds are
reported, and each ratio is the median over rounds of the ratio within a round (the
machine is shared: step times swing by 10x with other load, ratios much less). The
last line is JSON with ``lightning_overhead`` (ours ÷ bare), ``precompute_speedup``
(on-the-fly ÷ precomputed) and ``text_cache_speedup`` (latent shards with the text
encoder in the step ÷ latent shards with stored embeddings).

Usage: ``python benchmarks/ldm_step.py [--steps 25] [--rounds 3] [--batch 32]
[--variants ours_shards_latents,ours_shards_text] [--set ldm.text_encoder.num_layers=6 ...]``
(``--set``: Hydra overrides, e.g. a wider text encoder; ``--variants``: run only these).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time

import torch


VARIANTS = ("ours_latents", "bare", "ours_shards_latents", "ours_shards_images", "ours_shards_text")


def build(tmp: str, batch: int, steps: int, overrides: list):
    from omegaconf import OmegaConf

    from dalle3.config import compose
    from dalle3.config.schema import WorldConfig
    from dalle3.ldm.model import build_vae
    from dalle3.ldm.stage import run_latents as precompute
    from dalle3.world.writer import write_split

    wcfg = WorldConfig(image_size=32, max_objects=2)
    write_split(f"{tmp}/world", "train", 512, 128, wcfg, 0, progress=False)
    cfg = compose([f"paths.data_dir={tmp}/world", f"paths.out_dir={tmp}/out", "world=small32", "stage=ldm",
                   f"data.global_batch_size={batch}", "data.num_workers=0", f"data.epoch_samples={batch * 1000}",
                   "data.val_shards=", "trainer=cpu", f"trainer.max_steps={steps}", "trainer.progress_bar=false",
                   "trainer.resume=null", "trainer.ckpt_every_n_steps=100000", "ldm.sample.every_n_steps=0",
                   "ldm.latents.splits=[train]", "ldm.train.warmup_steps=10", *overrides])
    OmegaConf.resolve(cfg)
    build_vae(cfg.ldm.vae, 32).save_pretrained(cfg.ldm.vae.pretrained)
    precompute(cfg)
    text_cfg = copy.deepcopy(cfg)  # the same shards again, with the captions' text embeddings stored
    text_cfg.ldm.latents.out_dir, text_cfg.ldm.latents.precompute_text = f"{tmp}/out/latents_text", True
    precompute(text_cfg)
    return cfg, text_cfg


def fixed_batches(cfg, n: int) -> list[dict]:
    from dalle3.ldm.data import LatentDataModule
    from dalle3.ldm.stage import latent_data_cfg

    it = iter(LatentDataModule(latent_data_cfg(cfg), cfg.caption).train_dataloader())
    return [{"latent": b["latent"], "caption": b["caption"]} for b in (next(it) for _ in range(n))]


class _Timer:
    def __init__(self):
        import lightning.pytorch as pl

        class T(pl.Callback):
            def __init__(s):
                s.times = []

            def on_train_batch_end(s, *args):
                s.times.append(time.perf_counter())
        self.cb = T()

    def median(self, warmup: int) -> float:
        t = self.cb.times
        return statistics.median(b - a for a, b in zip(t[warmup:], t[warmup + 1:]))


def ours(cfg, parts, init_state, datamodule, tag: str, warmup: int) -> float:
    from dalle3.ldm.module import LatentDiffusionModule
    from dalle3.ldm.stage import ldm_callbacks
    from dalle3.trainer import fit

    parts.unet.load_state_dict(init_state)
    cfg.paths.run_dir = os.path.join(cfg.paths.out_dir, f"run_{tag}_{time.time_ns()}")
    timer = _Timer()
    fit(LatentDiffusionModule(cfg.ldm, parts), datamodule, cfg,
        callbacks=[c for c in ldm_callbacks(cfg) if type(c).__name__ != "DataStats"] + [timer.cb],
        limit_val_batches=0, enable_model_summary=False)
    return timer.median(warmup)


def bare(cfg, parts, init_state, batches: list[dict], steps: int, warmup: int) -> float:
    """diffusers train_text_to_image.py's inner loop, same arithmetic as our step."""
    import torch.nn.functional as F
    from diffusers.training_utils import EMAModel

    unet, sched, tok, text = parts.unet, parts.noise_scheduler, parts.tokenizer, parts.text_encoder
    unet.load_state_dict(init_state)
    unet.train()
    t = cfg.ldm.train
    opt = torch.optim.AdamW(unet.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / t.warmup_steps))
    ema = EMAModel(unet.parameters(), decay=t.ema_decay)
    sf = parts.vae.config.scaling_factor
    times = []
    for step in range(steps):
        batch = batches[step % len(batches)]
        captions = ["" if d else c for c, d in zip(batch["caption"], (torch.rand(len(batch["caption"])) < 0.1).tolist())]
        ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        with torch.no_grad():
            hidden = text(ids)[0]
            mean, logvar = batch["latent"].chunk(2, dim=1)
            latents = (mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)) * sf
        noise = torch.randn_like(latents)
        ts = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],))
        pred = unet(sched.add_noise(latents, noise, ts), ts, encoder_hidden_states=hidden).sample
        loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        opt.zero_grad(set_to_none=True)
        ema.step(unet.parameters())
        times.append(time.perf_counter())
    return statistics.median(b - a for a, b in zip(times[warmup:], times[warmup + 1:]))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--set", nargs="*", default=[], help="Hydra overrides, e.g. ldm.text_encoder.num_layers=6")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if set(variants) - set(VARIANTS):
        p.error(f"--variants {args.variants!r}; allowed: {','.join(VARIANTS)}")
    torch.manual_seed(0)
    from dalle3.data.datamodule import ShardDataModule
    from dalle3.ldm.data import LatentDataModule
    from dalle3.ldm.model import build_parts
    from dalle3.ldm.stage import latent_data_cfg

    tmp = tempfile.mkdtemp(prefix="ldm_bench_")
    cfg, text_cfg = build(tmp, args.batch, args.steps, args.set)
    parts = build_parts(cfg.ldm)
    init_state = copy.deepcopy(parts.unet.state_dict())
    batches = fixed_batches(cfg, 8)

    class Fixed(__import__("lightning").pytorch.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(batches * (args.steps // len(batches) + 2), batch_size=None)

    run = {
        "ours_latents": lambda: ours(cfg, parts, init_state, Fixed(), "fixed", args.warmup),
        "bare": lambda: bare(cfg, parts, init_state, batches, args.steps, args.warmup),
        "ours_shards_latents": lambda: ours(cfg, parts, init_state, LatentDataModule(
            latent_data_cfg(cfg), cfg.caption), "lat", args.warmup),
        "ours_shards_images": lambda: ours(cfg, parts, init_state, ShardDataModule(cfg.data, cfg.caption), "img",
                                           args.warmup),
        "ours_shards_text": lambda: ours(cfg, parts, init_state, LatentDataModule(
            latent_data_cfg(text_cfg), cfg.caption, text=True), "text", args.warmup),
    }
    results: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for k in variants:
            results[k].append(run[k]())
        print(f"round {r}: " + ", ".join(f"{k} {v[-1] * 1000:.1f} ms" for k, v in results.items()), flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}

    def ratio(num: str, den: str):
        # ratios within a round: the variants of one round ran back to back, under the same load
        if num not in results or den not in results:
            return None
        return round(statistics.median(a / b for a, b in zip(results[num], results[den])), 4)

    text = parts.text_encoder
    out = {"unet_params": sum(p.numel() for p in parts.unet.parameters()),
           "text_params": sum(p.numel() for p in text.parameters()), "batch": args.batch,
           "steps": args.steps, "rounds": args.rounds, "threads": torch.get_num_threads(),
           **{f"{k}_ms": round(v * 1000, 2) for k, v in med.items()},
           "lightning_overhead": ratio("ours_latents", "bare"),
           "precompute_speedup": ratio("ours_shards_images", "ours_shards_latents"),
           "text_cache_speedup": ratio("ours_shards_latents", "ours_shards_text")}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    sys.exit(main() and 0)
