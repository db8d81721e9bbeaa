"""The judge CLIP: caption edits, the judge split, the scorer's two paths, its validation and config errors."""
from __future__ import annotations

import hashlib
import json
import random
import tarfile

import pytest
import torch
from safetensors.torch import save_file

from dalle3.config import compose
from dalle3.config.eval import JudgeArchConfig, JudgeConfig, validate_judge
from dalle3.config.schema import DataGenConfig, SplitSizes, WorldConfig
from dalle3.config.validate import ConfigError
from dalle3.eval.data import TWIN_EDITS, twin_scene
from dalle3.eval.edits import EDIT_KINDS, EDITS, changed_fact
from dalle3.eval.judge import JudgeScorer, validate_judge_model
from dalle3.eval.module import JudgeModule
from dalle3.world import render, write_world
from dalle3.world.facts import score_caption
from dalle3.world.parse import caption_facts
from dalle3.world.writer import SPLIT_SHARD_OFFSET, SPLITS, make_sample

WORLD = WorldConfig()
TINY = JudgeConfig(image_size=32, lr=3e-3, warmup_steps=20,
                   arch=JudgeArchConfig(patch_size=4, stem_channels=[16], vision_width=64, vision_layers=1,
                                        vision_head_width=32, text_width=32, text_heads=2, text_layers=1,
                                        embed_dim=32, context_length=80))


def _samples(split, n, seed=0):
    return [make_sample(seed, split, i, WORLD) for i in range(n)]


# -- caption edits ------------------------------------------------------------------------------
def _diff(a, b):
    fa, fb = caption_facts(a), caption_facts(b)
    return {c: (fa[c] - fb[c], fb[c] - fa[c]) for c in fa if fa[c] != fb[c]}


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_each_edit_changes_exactly_one_fact_of_its_kind_and_makes_the_caption_false(kind):
    for i, (scene, captions) in enumerate(_samples("val", 150)):
        dsc = captions["dsc"]
        edited = EDITS[kind](dsc, random.Random(i))
        assert edited is not None and changed_fact(dsc, edited) == kind, (dsc, edited)
        diff = _diff(dsc, edited)
        if kind == "count":
            ((gone,), (new,)), = [diff.pop("count")]
            assert gone[1:] == new[1:] and gone[0] != new[0]  # same group, another number
        elif kind == "position":
            ((gone,), (new,)), = [diff.pop("position")]
            assert gone[:2] == new[:2] and gone[2] != new[2]  # same group, another cell
        else:  # a colour or shape edit renames one group: every fact tuple of it follows
            ((gone,), (new,)) = diff.pop("colour")
            slot = 0 if kind == "colour" else 1
            assert gone[slot] != new[slot] and gone[1 - slot] == new[1 - slot]
            diff.pop("shape", None)
            for cat, (was, now) in diff.items():
                assert cat in ("size", "count", "position") and len(was) == len(now)
        if kind in ("count", "position"):
            assert diff == {}, diff  # nothing else moved
        assert "sign" not in diff
        wrong = score_caption(edited, scene)
        assert any(s["false"] for s in wrong.values()), (dsc, edited)  # the edit is false of the image
        assert not any(s["false"] for s in score_caption(dsc, scene).values())


def test_changed_fact_rejects_no_change_two_changes_and_sign_changes():
    dsc = "A white background with one small red circle in the top left and one large blue square at the bottom."
    assert changed_fact(dsc, dsc) is None
    assert changed_fact(dsc, dsc.replace("red", "green").replace("blue", "yellow")) is None
    assert changed_fact(dsc, dsc.replace("top left", "top right")) == "position"
    signed = dsc + ' A sign along the top says "CAT".'
    assert changed_fact(signed, signed.replace("CAT", "DOG")) is None
    assert changed_fact(dsc, dsc.replace("blue", "red")) == "colour"  # a red square is still a group of its own
    merged = dsc.replace("blue square", "red circle")
    assert changed_fact(dsc, merged) is None  # two mentions of one group: not one fact


def test_a_twin_scene_differs_from_its_scene_in_one_fact_of_its_kind():
    seen = set()
    for i, (scene, _) in enumerate(_samples("judge", 200)):
        twin, kind = twin_scene(scene, random.Random(i))
        twin.validate()
        seen.add(kind)
        a, b = scene.objects, twin.objects
        if kind == "count":
            assert abs(len(a) - len(b)) == 1
            small, big = sorted((a, b), key=len)
            extra = [o for o in big if o not in small]
            assert len(extra) == 1 and any((o.colour, o.shape) == (extra[0].colour, extra[0].shape) for o in small)
        else:
            (old, new), = [(o, t) for o, t in zip(a, b) if o != t]
            attrs = {"colour": ("colour",), "shape": ("shape",), "position": ("row", "col")}[kind]
            assert all(getattr(old, f) == getattr(new, f) for f in ("shape", "colour", "size", "row", "col")
                       if f not in attrs)
            assert any(getattr(old, f) != getattr(new, f) for f in attrs)
        assert (twin.background, twin.sign) == (scene.background, scene.sign)
    assert seen == set(TWIN_EDITS)


def test_twin_weights_tilt_the_kind_of_fact_a_twin_changes():
    scenes = [scene for scene, _ in _samples("judge", 200)]
    equal = [twin_scene(s, random.Random(i), {k: 1.0 for k in TWIN_EDITS})[1] for i, s in enumerate(scenes)]
    assert equal == [twin_scene(s, random.Random(i))[1] for i, s in enumerate(scenes)]  # equal odds: the old stream
    heavy = [twin_scene(s, random.Random(i), {"colour": 1.0, "shape": 1.0, "position": 1.0, "count": 10.0})[1]
             for i, s in enumerate(scenes)]
    assert heavy.count("count") > 0.6 * len(heavy) > equal.count("count")
    only = {twin_scene(s, random.Random(i), {"colour": 0.0, "shape": 1.0, "position": 0.0, "count": 0.0})[1]
            for i, s in enumerate(scenes)}
    assert only == {"shape"}


# -- the judge split leaves the other splits byte-identical --------------------------------------
MEMBER_DIGESTS = {  # names + txt + json of DataGenConfig(6/3/4, shard_size=4), 32 px, before the judge split existed
    "train": "4bfcca465a45644561d713c9451b67bdc658c2a872592d4a7897fc4cc967f309",
    "val": "9e9048c47d55123bf8095af26ade4e5f4e7a97c1d2d7ade13780a7f1e0aa4d35",
    "annotated": "2a71ab234daf510e5c5626913bba9e9ede50a6e9fe2460122ebb401f2478cdf7",
}


def _digest(paths, with_images):
    h = hashlib.sha256()
    for p in paths:
        with tarfile.open(p) as tar:
            for m in tar.getmembers():
                h.update(m.name.encode())
                if with_images or not m.name.endswith(".png"):
                    h.update(tar.extractfile(m).read())
    return h.hexdigest()


def test_adding_the_judge_and_dev_splits_leaves_train_val_annotated_byte_identical(tmp_path):
    assert SPLITS[-2:] == ("judge", "dev") and SPLIT_SHARD_OFFSET["judge"] == 30000
    assert SPLIT_SHARD_OFFSET["dev"] == 40000 and SplitSizes().judge == 4096 and SplitSizes().dev == 512
    out = {}
    for extra in (0, 5):
        gen = DataGenConfig(sizes=SplitSizes(train=6, val=3, annotated=4, judge=extra, dev=extra), shard_size=4,
                            workers=1)
        out[extra] = write_world(str(tmp_path / str(extra)), gen, WorldConfig(image_size=32), progress=False)
    for split, digest in MEMBER_DIGESTS.items():
        assert _digest(out[5][split], False) == digest  # same keys, captions and scenes as before the splits
        assert _digest(out[5][split], True) == _digest(out[0][split], True)  # and the same bytes
    for split, first in (("judge", "300000000"), ("dev", "400000000")):
        assert out[0][split] == [] and len(out[5][split]) == 2
        with tarfile.open(out[5][split][0]) as tar:
            assert tar.getnames()[0] == first + ".png"
            meta = json.loads(tar.extractfile(first + ".json").read())
        assert meta["split"] == split and meta["dsc"] and "caption" in meta  # ground-truth DSC and alt
    dev_dsc = {json.loads(tarfile.open(p).extractfile(m).read())["dsc"] for p in out[5]["dev"]
               for m in tarfile.open(p).getnames() if m.endswith(".json")}
    val_dsc = {json.loads(tarfile.open(p).extractfile(m).read())["dsc"] for p in out[5]["val"]
               for m in tarfile.open(p).getnames() if m.endswith(".json")}
    assert not dev_dsc & val_dsc  # dev prompts are other scenes than the held-out val prompts


# -- training a tiny judge (shared by the next tests) --------------------------------------------
def _batch(samples, size=32):
    from torchvision.transforms.functional import pil_to_tensor

    return torch.stack([pil_to_tensor(render(scene, size)).float() / 255 for scene, _ in samples])


def _train(images, captions, steps, dsc_share=0.9, seed=0):
    """JudgeModule's own features, loss and optimizer, without a Trainer (seconds, not a stage run).

    ``captions``: (alt, dsc) per image; each draw takes the DSC with ``dsc_share``, as the stage's blend."""
    torch.manual_seed(seed)
    module = JudgeModule(TINY, max_steps=steps)
    opt = module.configure_optimizers()
    optimizer, sched = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randperm(len(images), generator=gen)[:64].tolist()
        picks = [captions[i][int(torch.rand(1, generator=gen) < dsc_share)] for i in idx]
        batch = {"image": images[idx], "caption": picks}
        keep = [k for k, c in enumerate(batch["caption"]) if c.strip()]
        batch = {"image": batch["image"][keep], "caption": [batch["caption"][k] for k in keep]}
        img, txt = module._features(batch)
        loss = module.loss_fn(img, txt, module.model.logit_scale.exp().reshape(()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sched.step()
        module.on_train_batch_end(None, None, 0)
    return JudgeScorer(module.model, module.tokenizer, TINY.image_size)


@pytest.fixture(scope="module")
def world(one_thread):
    train, val = _samples("judge", 768), _samples("val", 128)
    return _batch(train), [(c["alt"], c["dsc"]) for _, c in train], _batch(val), [c["dsc"] for _, c in val]


@pytest.fixture(scope="module")
def judges(world):
    images, captions, _, _ = world
    return {"dsc+alt": _train(images, captions, 300),
            "alt": _train(images, [(alt, alt) for alt, _ in captions], 300)}


def test_a_judge_trained_on_dsc_and_alt_ranks_matching_pairs_above_shuffled_ones(world, judges):
    _, _, images, dsc = world
    scorer = judges["dsc+alt"]
    matched = scorer(images, dsc)
    shuffled = scorer(images, dsc[1:] + dsc[:1])
    assert matched.shape == (len(dsc),) and (matched >= 0).all() and (matched <= 100).all()
    assert (matched > shuffled).float().mean() > 0.8
    sim = scorer.similarity(images, dsc)
    assert sim.shape == (len(dsc), len(dsc))
    assert torch.allclose(sim.diagonal(), scorer.cosine(images, dsc), atol=1e-5)
    assert torch.allclose(scorer.logits(images, dsc), sim * float(scorer.model.logit_scale.detach().exp()), atol=1e-4)
    report = validate_judge_model(scorer, images, dsc)
    assert report["pairs"] == len(dsc) and report["retrieval_top1"] > 5 * report["retrieval_chance"]


def test_the_sensitivity_check_fails_for_a_judge_trained_on_alt_text_only(world, judges):
    _, _, images, dsc = world
    alt_only = validate_judge_model(judges["alt"], images, dsc)
    both = validate_judge_model(judges["dsc+alt"], images, dsc)
    assert set(alt_only["sensitivity"]) == set(EDIT_KINDS) and alt_only["edited"]["colour"] == len(dsc)
    # alt-text never names a colour: the alt-only judge cannot tell a true colour from a changed one
    assert alt_only["sensitivity"]["colour"] < 0.9 and 0.3 < alt_only["sensitivity"]["colour"] < 0.7
    assert both["sensitivity"]["colour"] > alt_only["sensitivity"]["colour"] + 0.15


# -- open_clip by name, from a locally saved file -----------------------------------------------
def test_an_open_clip_model_by_name_loads_from_a_local_file(tmp_path, one_thread):
    import open_clip

    name = "dalle3_test_tiny_clip"
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    torch.manual_seed(3)
    reference = open_clip.create_model(name).eval()
    weights = tmp_path / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))

    scorer = JudgeScorer.from_config(JudgeConfig(model=name, pretrained=str(weights)))
    assert scorer.image_size == 32 and scorer.validation is None
    images = torch.rand(3, 3, 64, 64)  # any side: resized to the tower's
    texts = ["a red circle", "two blue squares", "a sign"]
    with torch.no_grad():
        x = torch.nn.functional.interpolate(images, size=32, mode="bicubic", antialias=True).clamp(0, 1)
        mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
        img = reference.encode_image((x - mean) / std, normalize=True)
        txt = reference.encode_text(open_clip.get_tokenizer(name)(texts), normalize=True)
    assert torch.allclose(scorer(images, texts), 100 * (img * txt).sum(-1).clamp(min=0), atol=1e-4)


# -- config errors: one line naming the key ------------------------------------------------------
@pytest.mark.parametrize("override,key", [
    ("eval.judge.model=NoSuchCLIP", "eval.judge.model='NoSuchCLIP' is not an open_clip model"),
    ("eval.judge.model=ViT-B-32", "eval.judge.pretrained is empty"),
    ("eval.judge.pretrained=laion2b_s34b_b79k", "eval.judge.pretrained="),
    ("eval.judge.arch.stem_channels=[32,64]", "eval.judge.arch.stem_channels=[32, 64]"),
    ("eval.judge.init_temperature=0", "eval.judge.init_temperature=0"),
    ("eval.judge.image_size=30", "eval.judge.image_size=30"),
    ("eval.judge.arch.text_heads=3", "eval.judge.arch.text_heads=3"),
    ("eval.judge.twin_weights.count=-1", "eval.judge.twin_weights="),
    ("+eval.judge.twin_weights.size=1", "eval.judge.twin_weights="),
])
def test_bad_judge_values_fail_with_one_line_naming_the_key(override, key):
    cfg = compose(["stage=judge", override])
    with pytest.raises(ConfigError) as err:
        validate_judge(cfg.eval.judge)
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def test_a_pretrained_tag_that_is_not_a_file_or_tag_and_a_missing_export_name_their_keys(tmp_path):
    cfg = compose(["stage=judge", "eval.judge.model=ViT-B-32", f"eval.judge.pretrained={tmp_path}/none.bin"])
    with pytest.raises(ConfigError, match=r"^eval\.judge\.pretrained=.* is neither a file nor a pretrained tag"):
        validate_judge(cfg.eval.judge)
    cfg = compose(["stage=judge", f"paths.out_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"^eval\.judge\.export=.* is not a judge export"):
        JudgeScorer.from_config(cfg.eval.judge)
    from dalle3.eval.stage import run_judge

    with pytest.raises(ConfigError, match=r"^data\.train_shards="):
        run_judge(compose(["stage=judge", f"paths.data_dir={tmp_path}/nowhere"]))
