"""stage=judge end to end on the CPU: the real root config, a tiny world, a few steps, export, validation, reload."""
from __future__ import annotations

import json

import pytest
import torch

from dalle3.config import compose
from dalle3.eval.judge import VALIDATION_FILE, JudgeScorer
from dalle3.eval.stage import run_judge
from dalle3.world.writer import write_split

TINY_JUDGE = ["eval.judge.arch.vision_width=32", "eval.judge.arch.vision_layers=1", "eval.judge.arch.text_width=32",
              "eval.judge.arch.text_heads=2", "eval.judge.arch.embed_dim=16", "eval.judge.arch.stem_channels=[8]"]


@pytest.mark.parametrize("twins", [False, True])
def test_stage_judge_trains_on_the_judge_split_exports_and_reloads(tmp_path, twins, one_thread):
    cfg = compose(["stage=judge", "experiment=smoke", f"paths.data_dir={tmp_path / 'world'}",
                   f"paths.out_dir={tmp_path / 'out'}", "trainer.max_steps=3", "trainer.progress_bar=false",
                   "data.num_workers=0", "data.global_batch_size=8", f"eval.judge.twins={str(twins).lower()}",
                   "eval.judge.val_samples=16", *TINY_JUDGE])
    for split, n in (("judge", 32), ("val", 16)):
        write_split(cfg.paths.data_dir, split, n, 16, cfg.world, cfg.datagen.seed, progress=False)
    assert cfg.data.train_shards.endswith("/judge") and cfg.caption.ratio == 0.9 and cfg.data.image_size == 32

    summary = run_judge(cfg)
    export = tmp_path / "out" / "judge" / "export"
    assert summary["steps"] == 3 and summary["export"] == str(export) == cfg.eval.judge.export
    names = {p.name for p in export.iterdir()}
    assert {"open_clip_model.safetensors", "dalle3_judge_clip.json", "tokenizer.json", VALIDATION_FILE} <= names
    assert not any(n.endswith((".pt", ".bin", ".pkl")) for n in names)  # safetensors only, never a pickle
    model_cfg = json.loads((export / "dalle3_judge_clip.json").read_text())
    assert model_cfg["text_cfg"]["pool_type"] == "eos" and model_cfg["vision_cfg"]["image_size"] == 32

    scorer = JudgeScorer.from_config(cfg.eval.judge)
    assert scorer.validation == summary["validation"] and scorer.validation["pairs"] == 16
    assert set(scorer.validation["sensitivity"]) == {"colour", "count", "position", "shape"}
    scores = scorer(torch.rand(2, 3, 32, 32), ["a red circle", "two blue squares on the left"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()
