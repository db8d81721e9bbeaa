"""The ldm stage with 2 processes on the CPU: DDP, DeepSpeed ZeRO-2 and ZeRO-3.

Each run is the real `dalle3-train stage=ldm` command (Lightning re-launches it per rank).
Covers: save, resume, consolidation into one fp32 safetensors file, EMA under ZeRO-3,
and the per-rank memory that ZeRO saves, read from the DeepSpeed engine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.dist, pytest.mark.slow]
TRAIN = str(Path(sys.executable).parent / "dalle3-train")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny world (4 train shards) and a saved, untrained tiny VAE: enough for the U-Net's code paths."""
    from dalle3.config import compose
    from dalle3.config.schema import WorldConfig
    from dalle3.ldm.model import build_vae
    from dalle3.world.writer import write_split

    root = tmp_path_factory.mktemp("dist")
    wcfg = WorldConfig(image_size=32, max_objects=2)
    write_split(str(root / "world"), "train", 128, 32, wcfg, 0, progress=False)
    write_split(str(root / "world"), "val", 32, 16, wcfg, 0, progress=False)
    cfg = compose([])
    build_vae(cfg.ldm.vae, 32).save_pretrained(root / "out" / "vae" / "vae")
    return root


def train(root: Path, name: str, *extra: str) -> list[dict]:
    args = [TRAIN, "stage=ldm", f"paths.data_dir={root / 'world'}", f"paths.out_dir={root / 'out'}",
            f"paths.run_dir={root / 'out' / name}", "world=small32", "trainer.accelerator=cpu", "trainer.devices=2",
            "data.global_batch_size=8", "data.num_workers=0", "data.epoch_samples=64", "data.val_samples=8",
            "ldm.train.use_latents=false", "trainer.progress_bar=false", "trainer.val_check_interval=4",
            "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1", "ldm.sample.every_n_steps=0", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=480, env=env)
    assert proc.returncode == 0, proc.stderr[-5000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"stage"')]
    return sorted(lines, key=lambda s: s["rank"])


@pytest.fixture(scope="module")
def ddp(setup):
    return train(setup, "ddp", "trainer=ddp", "trainer.max_steps=4")


@pytest.fixture(scope="module")
def zero2(setup):
    return train(setup, "zero2", "trainer=deepspeed_zero2", "trainer.max_steps=4")


@pytest.fixture(scope="module")
def zero3(setup):
    # ema_decay ~ 0: the EMA must equal the current (gathered) weights exactly
    return train(setup, "zero3", "trainer=deepspeed_zero3", "trainer.max_steps=4", "trainer.ckpt_every_n_steps=2",
                 "ldm.train.ema_decay=1e-9", "ldm.sample.every_n_steps=4", "ldm.sample.steps=2")


def test_ddp_two_ranks_train_the_same_number_of_steps(ddp):
    assert [(s["rank"], s["world_size"], s["global_step"]) for s in ddp] == [(0, 2, 4), (1, 2, 4)]


def test_zero_partitions_optimizer_state_and_parameters(ddp, zero2, zero3):
    """Per rank: ZeRO-2 holds ~half DDP's optimizer state, ZeRO-3 also ~half its parameters."""
    d, z2, z3 = (run[0]["rank_memory"] for run in (ddp, zero2, zero3))
    assert z2["optimizer_state"] == pytest.approx(d["optimizer_state"] / 2, rel=0.05)
    assert z2["params"] == d["params"]
    assert z3["params"] == pytest.approx(d["params"] / 2, rel=0.05)
    assert z3["optimizer_state"] == pytest.approx(d["optimizer_state"] / 2, rel=0.05)
    assert zero3[1]["rank_memory"]["params"] == pytest.approx(d["params"] / 2, rel=0.05)


def _unet_from(weights_file: str):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    from dalle3.config import compose
    from dalle3.ldm.model import build_unet

    cfg = compose([])
    unet: UNet2DConditionModel = build_unet(cfg.ldm.unet, 8, 4, cfg.ldm.text_encoder.hidden_size)
    missing, unexpected = unet.load_state_dict(load_file(weights_file), strict=False)
    assert not unexpected and all("running" in k for k in missing)  # every parameter came from the file
    return unet


def test_zero2_checkpoint_consolidates_into_one_fp32_file(setup, zero2, tmp_path):
    from dalle3.dist.zero import consolidate

    ckpt = setup / "out" / "zero2" / "checkpoints" / "last.ckpt"
    assert (ckpt / "latest").exists()  # a DeepSpeed checkpoint folder
    unet = _unet_from(consolidate(str(ckpt), str(tmp_path / "unet.safetensors")))
    assert all(p.dtype == torch.float32 for p in unet.parameters())


def test_zero3_saves_consolidates_with_correct_ema_and_resumes(setup, zero3, tmp_path):
    from dalle3.dist.zero import consolidate

    assert [s["global_step"] for s in zero3] == [4, 4]
    ckpt = str(setup / "out" / "zero3" / "checkpoints" / "last.ckpt")
    raw = _unet_from(consolidate(ckpt, str(tmp_path / "raw.safetensors"))).state_dict()
    ema = _unet_from(consolidate(ckpt, str(tmp_path / "ema.safetensors"), ema=True)).state_dict()
    # the EMA shadow is the full, gathered weights (not a rank's slice) and tracks training
    assert all(torch.allclose(raw[k], ema[k], atol=1e-6) for k in raw)
    assert os.path.exists(setup / "out" / "zero3" / "samples" / "step_0000004.png")  # sampled on rank 0
    again = train(setup, "zero3", "trainer=deepspeed_zero3", "trainer.max_steps=6", "trainer.ckpt_every_n_steps=2",
                  "ldm.train.ema_decay=1e-9")
    assert [s["global_step"] for s in again] == [6, 6]
    assert [s["steps_run"] for s in again] == [2, 2]  # resumed at step 4: two new steps per rank
