"""Captioner stages end to end on a tiny synthetic world: pretrain, fine-tune, resume, export,
and the same command under DDP (Lightning's launcher and torchrun) and DeepSpeed ZeRO-2."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dalle3.config import ConfigError, compose
from dalle3.stages import run_stage

BIN = Path(sys.executable).parent
WORLD = ["experiment=smoke", "datagen.workers=1", "datagen.shard_size=32"]
TINY = ["captioner.arch.image_size=32", "captioner.arch.patch_size=4", "captioner.arch.stem_channels=[16]",
        "captioner.arch.vision_layers=1",
        "captioner.arch.vision_width=64", "captioner.arch.embed_dim=64", "captioner.arch.text_width=64",
        "captioner.arch.text_layers=1", "captioner.arch.decoder_layers=1", "captioner.arch.attn_pooler_queries=17",
        "captioner.warmup_steps=2", "captioner.val_captions=4", "captioner.decode.max_new_tokens=12",
        "data.global_batch_size=16", "data.num_workers=0", "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1", "trainer.progress_bar=false"]


PRETRAIN_LR = 2e-3


def overrides(root: Path, *extra: str) -> list[str]:
    return [*WORLD, f"paths.data_dir={root / 'world'}", f"paths.out_dir={root / 'out'}", *TINY, *extra]


def scalars(run_dir: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return [e.value for e in sorted(acc.Scalars(tag), key=lambda e: e.step)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("captioner")
    run_stage(compose(["stage=world", *WORLD, f"paths.data_dir={root / 'world'}"]))
    return root


@pytest.fixture(scope="module")
def pretrained(world, one_thread) -> dict:
    # pretrain_lr: the preset's gentle 3e-4 is for 150 steps; 12 steps need more to show a falling loss
    return run_stage(compose(overrides(world, "stage=captioner_pretrain", "trainer.max_steps=12",
                                       "trainer.val_check_interval=12", "trainer.ckpt_every_n_steps=6",
                                       f"captioner.pretrain_lr={PRETRAIN_LR}")))


def test_pretrain_loss_falls_checkpoints_and_exports(pretrained):
    run_dir = Path(pretrained["run_dir"])
    assert pretrained["steps"] == 12 and pretrained["target"] == "alt" and run_dir.name == "captioner_pretrain"
    loss = scalars(run_dir, "train/loss")
    assert len(loss) >= 10 and sum(loss[-3:]) / 3 < 0.8 * sum(loss[:2]) / 2
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    table = (run_dir / "val_captions" / "step_0000012.md").read_text()
    assert "| generated | ground truth |" in table and table.count("\n| ") >= 4

    from dalle3.captioner.export import load_exported
    from dalle3.captioner.generate import CaptionGenerator, DecodeOptions

    cap = load_exported(pretrained["export"])
    captions = CaptionGenerator(cap.model, cap.tokenizer, DecodeOptions(max_new_tokens=10))(torch.rand(2, 3, 32, 32))
    assert len(captions) == 2


def test_finetune_starts_from_the_pretrain_export(world, pretrained):
    from dalle3.captioner.export import load_exported
    from dalle3.captioner.module import CaptionerModule

    cfg = compose(overrides(world, "stage=captioner_finetune", "captioner.target=ssc", "trainer.max_steps=3",
                            "trainer.val_check_interval=3"))
    assert cfg.captioner.init_from == pretrained["export"] and cfg.data.train_shards.endswith("annotated")
    start = CaptionerModule(cfg.captioner, max_steps=3, init_from=cfg.captioner.init_from).model.state_dict()
    exported = load_exported(pretrained["export"]).model.state_dict()
    assert all(torch.equal(start[k], exported[k]) for k in exported)
    summary = run_stage(cfg)
    assert summary["target"] == "ssc" and summary["steps"] == 3 and summary["train/contrastive_loss"] == 0.0
    assert (pretrained["lr"], summary["lr"]) == (PRETRAIN_LR, cfg.captioner.lr) and cfg.captioner.lr != PRETRAIN_LR
    assert Path(summary["run_dir"]).name == "captioner_ssc"
    meta = json.loads((Path(summary["export"]) / "captioner.json").read_text())
    assert meta["target"] == "ssc" and meta["init_from"] == pretrained["export"]


def test_resume_continues_from_the_last_checkpoint(world, pretrained, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(Path(pretrained["run_dir"]), out / "captioner_pretrain")
    summary = run_stage(compose(overrides(world, "stage=captioner_pretrain", f"paths.out_dir={out}",
                                          "trainer.max_steps=15", "trainer.val_check_interval=15")))
    assert summary["resumed_from"].endswith("last.ckpt")
    assert summary["steps"] == 15 and summary["steps_run"] == 3  # continued at step 12


def test_finetune_without_a_pretrain_export_fails_with_one_line(world, tmp_path):
    cfg = compose(overrides(world, "stage=captioner_finetune", f"paths.out_dir={tmp_path / 'empty'}"))
    with pytest.raises(ConfigError) as err:
        run_stage(cfg)
    assert "captioner.init_from" in str(err.value) and "\n" not in str(err.value)


def test_finetune_with_another_vocabulary_than_the_pretrain_fails_with_one_line(world, pretrained):
    phrases = compose(overrides(world, "stage=captioner_finetune")).captioner.phrases
    cfg = compose(overrides(world, "stage=captioner_finetune", f"captioner.phrases={phrases + 5}"))
    with pytest.raises(ConfigError) as err:
        run_stage(cfg)
    assert f"captioner.phrases={phrases}" in str(err.value) and "\n" not in str(err.value)


def test_finetune_with_another_image_stem_than_the_pretrain_fails_with_one_line(world, pretrained):
    cfg = compose(overrides(world, "stage=captioner_finetune", "captioner.arch.stem_norm=group"))
    with pytest.raises(ConfigError) as err:
        run_stage(cfg)
    assert "captioner.arch.stem_norm=none" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- several processes
def _cli(cmd: list[str], out: Path) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=env)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"stage"')]
    return sorted(lines, key=lambda r: r["rank"])


@pytest.mark.dist
@pytest.mark.slow
def test_ddp_two_ranks_with_lightnings_launcher(world, tmp_path):
    runs = _cli([str(BIN / "dalle3-train"), *overrides(world, "stage=captioner_pretrain", f"paths.out_dir={tmp_path}",
                                                      "trainer=ddp", "trainer.accelerator=cpu", "trainer.max_steps=4",
                                                      "trainer.val_check_interval=4")], tmp_path)
    assert [(r["rank"], r["world_size"], r["steps"], r["strategy"]) for r in runs] == \
        [(0, 2, 4, "DDPStrategy"), (1, 2, 4, "DDPStrategy")]
    assert (tmp_path / "captioner_pretrain" / "export" / "open_clip_model.safetensors").exists()


@pytest.mark.dist
@pytest.mark.slow
def test_ddp_two_ranks_under_torchrun(world, tmp_path):
    runs = _cli([str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", str(BIN / "dalle3-train"),
                 *overrides(world, "stage=captioner_pretrain", f"paths.out_dir={tmp_path}", "trainer=ddp",
                            "trainer.accelerator=cpu", "trainer.max_steps=4", "trainer.val_check_interval=4")],
                tmp_path)
    assert [(r["rank"], r["world_size"], r["steps"]) for r in runs] == [(0, 2, 4), (1, 2, 4)]


@pytest.mark.dist
@pytest.mark.slow
def test_zero2_two_ranks_saves_resumes_and_exports_consolidated_weights(world, tmp_path):
    from safetensors.torch import load_file

    from dalle3.dist.zero import load_checkpoint

    common = overrides(world, "stage=captioner_pretrain", f"paths.out_dir={tmp_path}", "trainer=deepspeed_zero2",
                       "trainer.accelerator=cpu", "trainer.ckpt_every_n_steps=2")
    first = _cli([str(BIN / "dalle3-train"), *common, "trainer.max_steps=4", "trainer.val_check_interval=4"], tmp_path)
    assert [(r["world_size"], r["steps"], r["strategy"]) for r in first] == [(2, 4, "CPUDeepSpeedStrategy")] * 2
    run_dir = tmp_path / "captioner_pretrain"
    assert (run_dir / "checkpoints" / "last.ckpt" / "latest").exists()  # a DeepSpeed checkpoint folder
    again = _cli([str(BIN / "dalle3-train"), *common, "trainer.max_steps=6", "trainer.val_check_interval=6"], tmp_path)
    assert [(r["steps"], r["steps_run"]) for r in again] == [(6, 2), (6, 2)]
    exported = load_file(str(run_dir / "export" / "open_clip_model.safetensors"))
    ckpt = load_checkpoint(str(run_dir / "checkpoints" / "last.ckpt"))["state_dict"]
    for key, value in exported.items():
        torch.testing.assert_close(value, ckpt[f"model.{key}"].to(value.dtype), rtol=0, atol=0)
