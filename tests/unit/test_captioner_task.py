"""Pieces of the captioner task: config checks, schedule, padding trim, loss, evaluator."""
from __future__ import annotations

import math
import random

import pytest
import torch

from dalle3.captioner.evaluate import count_breakdown, evaluate_captions, flat_metrics, quality_table
from dalle3.captioner.losses import FocalCrossEntropy, build_loss, coca_losses
from dalle3.captioner.model import build_captioner
from dalle3.captioner.module import cosine_with_warmup, trim_padding
from dalle3.captioner.stage import check_buildable
from dalle3.config import ConfigError, compose
from dalle3.config.captioner import FINETUNE_TARGETS, PRETRAIN_TARGETS, CaptionerConfig, validate_captioner
from dalle3.config.convert import to_dataclass
from dalle3.config.schema import WorldConfig
from dalle3.world.captions import make_captions
from dalle3.world.scene import Obj, Scene, sample_scene


@pytest.mark.parametrize("overrides, key", [
    (["stage=captioner_finetune", "captioner.target=alt"], "captioner.target"),
    (["stage=captioner_pretrain", "captioner.target=dsc"], "captioner.target"),
    (["stage=captioner_pretrain", "captioner.tokenizer=bpe"], "captioner.tokenizer"),
    (["stage=captioner_pretrain", "captioner.decode.mode=nucleus"], "captioner.decode.mode"),
    (["stage=captioner_pretrain", "caption.source=dsc"], "caption.source"),
    (["stage=captioner_pretrain", "captioner.caption_weight=-1"], "captioner.caption_weight"),
    (["stage=captioner_pretrain", "captioner.caption_focal_gamma=-1"], "captioner.caption_focal_gamma"),
    (["stage=captioner_pretrain", "captioner.arch.pos_embed_type=rope"], "captioner.arch.pos_embed_type"),
    (["stage=captioner_pretrain", "captioner.arch.image_size=100"], "captioner.arch.image_size"),
    (["stage=captioner_pretrain", "captioner.arch.text_width=128"], "captioner.arch.vision_width"),
    (["stage=captioner_pretrain", "captioner.arch.stem=cnn"], "captioner.arch.stem"),
    (["stage=captioner_pretrain", "captioner.arch.stem_norm=batch"], "captioner.arch.stem_norm"),
    (["stage=captioner_pretrain", "captioner.pretrain_lr=0"], "captioner.pretrain_lr"),
    (["stage=captioner_pretrain", "captioner.arch.stem_channels=[32]"], "captioner.arch.stem_channels=[32] downsample by 4"),
    (["stage=captioner_pretrain", "captioner.arch.patch_size=16"], "captioner.arch.stem_channels"),
])
def test_bad_captioner_values_fail_with_one_line(overrides, key):
    cfg = compose(overrides)
    with pytest.raises(ConfigError) as err:
        validate_captioner(cfg, PRETRAIN_TARGETS if cfg.stage == "captioner_pretrain" else FINETUNE_TARGETS)
        check_buildable(cfg.captioner)
    assert key in str(err.value) and "\n" not in str(err.value)


def test_stages_pick_split_caption_source_weights_and_run_dir():
    pre = compose(["stage=captioner_pretrain"])
    assert (pre.caption.source, pre.captioner.contrastive_weight, pre.captioner.caption_weight) == ("alt", 1.0, 2.0)
    for target in ("ssc", "dsc"):
        ft = compose(["stage=captioner_finetune", f"captioner.target={target}"])
        assert ft.caption.source == target and ft.paths.run_dir.endswith(f"captioner_{target}")
        assert (ft.captioner.contrastive_weight, ft.captioner.caption_weight) == (0.0, 1.0)
        assert ft.data.train_shards.endswith("/annotated")
        assert ft.captioner.init_from == f"{pre.paths.out_dir}/captioner_pretrain/export"


def test_cosine_with_warmup():
    assert cosine_with_warmup(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert cosine_with_warmup(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert cosine_with_warmup(55, 10, 100, 0.1) == pytest.approx(0.55)
    assert cosine_with_warmup(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert cosine_with_warmup(500, 10, 100, 0.1) == pytest.approx(0.1)


def test_trim_padding_keeps_the_longest_caption():
    tokens = torch.tensor([[1, 5, 2, 0, 0, 0], [1, 5, 6, 7, 2, 0]])
    assert trim_padding(tokens, 0).tolist() == [[1, 5, 2, 0, 0], [1, 5, 6, 7, 2]]


def test_trimming_does_not_change_the_caption_loss():
    torch.manual_seed(0)
    cfg = to_dataclass(CaptionerConfig, compose(["captioner.arch.image_size=32", "captioner.arch.vision_layers=1"]).captioner)
    cap = build_captioner(cfg)
    images, text = torch.randn(2, 3, 32, 32), cap.tokenizer(["a red circle", "two small squares at the top"])
    loss = build_loss(cfg, 0)
    with torch.no_grad():
        full = coca_losses(loss, cap.model(images, text))["caption_loss"]
        trimmed = coca_losses(loss, cap.model(images, trim_padding(text, 0)))["caption_loss"]
    torch.testing.assert_close(full, trimmed)


def test_zero_contrastive_weight_still_gives_every_parameter_a_gradient():
    cfg = to_dataclass(CaptionerConfig, compose(["stage=captioner_finetune", "captioner.arch.image_size=32",
                                       "captioner.arch.vision_layers=1"]).captioner)
    cap = build_captioner(cfg)
    out = cap.model(torch.randn(2, 3, 32, 32), cap.tokenizer(["a red circle", "a blue square"]))
    losses = coca_losses(build_loss(cfg, 0), out)
    assert float(losses["contrastive_loss"]) == 0.0
    losses["loss"].backward()
    missing = [n for n, p in cap.model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing  # DDP needs no find_unused_parameters
    assert torch.count_nonzero(cap.model.logit_scale.grad) == 0


def test_contrastive_loss_matches_clip_cross_entropy():
    cfg = to_dataclass(CaptionerConfig, compose(["stage=captioner_pretrain", "captioner.caption_focal_gamma=0"]).captioner)
    img, txt = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1), torch.nn.functional.normalize(
        torch.randn(4, 8), dim=-1)
    out = {"image_features": img, "text_features": txt, "logit_scale": torch.tensor([10.0]),
           "logits": torch.randn(4, 5, 11), "labels": torch.randint(1, 11, (4, 5))}
    losses = coca_losses(build_loss(cfg, 0), out)
    logits = 10.0 * img @ txt.T
    want = (torch.nn.functional.cross_entropy(logits, torch.arange(4))
            + torch.nn.functional.cross_entropy(logits.T, torch.arange(4))) / 2
    torch.testing.assert_close(losses["contrastive_loss"], cfg.contrastive_weight * want)
    caption = torch.nn.functional.cross_entropy(out["logits"].permute(0, 2, 1), out["labels"], ignore_index=0)
    torch.testing.assert_close(losses["caption_loss"], cfg.caption_weight * caption)


def test_focal_caption_loss_is_cross_entropy_at_gamma_0_and_weighs_unsure_tokens_more():
    logits, labels = torch.randn(3, 11, 6, requires_grad=True), torch.randint(1, 11, (3, 6))
    labels[0, 4:] = 0  # pads
    ce = torch.nn.functional.cross_entropy(logits.permute(0, 2, 1).reshape(-1, 11), labels.reshape(-1),
                                           ignore_index=0)
    torch.testing.assert_close(FocalCrossEntropy(0.0, 0)(logits, labels), ce)
    # one confident token (p ~ 1) and one unsure token (p ~ 0.1): gamma 2 keeps the unsure one's loss
    sure, unsure = torch.full((1, 11, 1), -5.0), torch.zeros(1, 11, 1)
    sure[0, 3, 0] = 5.0
    pair = torch.cat([sure, unsure], dim=2)
    target = torch.tensor([[3, 3]])
    per_token = [FocalCrossEntropy(2.0, 0)(pair[:, :, i:i + 1], target[:, i:i + 1]) for i in range(2)]
    plain = [FocalCrossEntropy(0.0, 0)(pair[:, :, i:i + 1], target[:, i:i + 1]) for i in range(2)]
    assert per_token[0] < 1e-3 * plain[0] and per_token[1] > 0.8 * plain[1]
    cfg = to_dataclass(CaptionerConfig, compose(["stage=captioner_pretrain", "captioner.caption_focal_gamma=2"]).captioner)
    assert isinstance(build_loss(cfg, 0).caption_loss, FocalCrossEntropy)
    FocalCrossEntropy(1.0, 0)(logits, labels).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, :, 4:].abs().sum() == 0


def _world(n: int, seed: int = 0):
    rng, cfg = random.Random(seed), WorldConfig()
    out = []
    for _ in range(n):
        scene = sample_scene(rng, cfg)
        out.append((scene, make_captions(scene, rng, cfg)))
    return out


def test_evaluator_credits_ground_truth_and_alt_text_never_states_colours():
    samples = _world(300)
    scenes = [s.to_dict() for s, _ in samples]
    dsc = evaluate_captions([c["dsc"] for _, c in samples], scenes)
    assert all(dsc[cat]["recall"] == pytest.approx(1.0) for cat in dsc)
    assert all(dsc[cat]["false_rate"] == pytest.approx(0.0) for cat in dsc)
    alt = evaluate_captions([c["alt"] for _, c in samples], scenes)
    assert alt["colour"]["recall"] == 0.0 and alt["sign"]["recall"] == 0.0
    wrong = evaluate_captions(["a large red circle in the center"] * 50, scenes[:50])
    assert wrong["colour"]["false_rate"] > 0.5
    table = quality_table({"dsc (truth)": dsc, "alt (truth)": alt})
    assert table.count("\n") == 3 and "| dsc (truth) | 1.00 / 0.00" in table
    assert "recall_colour" in flat_metrics(dsc) and not any(math.isnan(v) for v in flat_metrics(alt).values())


def test_count_breakdown_tells_merged_and_split_groups_apart():
    # a purple square and a purple circle (each a single sharing its colour), two red
    # triangles (a pair), and a blue circle alone in its colour
    scene = Scene([Obj("square", "purple", "small", 0, 1), Obj("circle", "purple", "large", 0, 2),
                   Obj("triangle", "red", "small", 2, 0), Obj("triangle", "red", "large", 2, 2),
                   Obj("circle", "blue", "large", 1, 1)], "white")
    right = ("One small purple square at the top, one large purple circle in the top right, two red "
             "triangles: a small one in the bottom left and a large one in the bottom right, and one large "
             "blue circle in the center on a white background.")
    wrong = ("Two purple squares: a small one at the top and a large one in the top right, one small red "
             "triangle in the bottom left and one large blue circle in the center on a white background.")
    good = count_breakdown([right], [scene])
    assert [good[k]["recall"] for k in good] == [1.0, 1.0, 1.0]
    bad = count_breakdown([wrong], [scene.to_dict()])
    assert bad["single, colour alone"] == {"groups": 1, "recall": 1.0, "wrong_count": 0.0, "unnamed": 0.0}
    # merged: the square is stated as one of two, the circle is never named with a count
    assert bad["single, colour shared"] == {"groups": 2, "recall": 0.0, "wrong_count": 0.5, "unnamed": 0.5}
    # split: the pair is stated as a single triangle
    assert bad["group of 2+"] == {"groups": 1, "recall": 0.0, "wrong_count": 1.0, "unnamed": 0.0}
