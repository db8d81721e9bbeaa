"""Write the synthetic world as webdataset shards in img2dataset's layout.

Per sample: ``{key}.png`` (or ``.jpg``), ``{key}.txt`` (the alt-text, as img2dataset
stores the web caption) and ``{key}.json`` (img2dataset's fields plus ``ssc``, ``dsc``
and the ``scene``).

Keys and file names: ``key = f"{shard_id:05d}{index_in_shard:04d}"`` and the shard file
is ``{out_dir}/{split}/{shard_id:05d}.tar``, as in img2dataset (a key's first five
digits name its tar). ``shard_id`` starts at a per-split offset (train 0, val 10000,
annotated 20000, judge 30000, dev 40000), so keys are unique across splits and recaptions or latents
from different splits can never be confused.

Adding a split changes no other split: a sample's seed hashes only (seed, its own split,
index) and each split's shard ids start at its own fixed offset, so the ``judge`` split
(the judge CLIP's training data, :mod:`dalle3.eval.judge`) and the ``dev`` split (screening
prompts) left train, val and annotated byte-identical (tests/unit/test_eval_judge.py pins their members).

Determinism: a sample is a pure function of (seed, split, index): its ``random.Random``
is seeded from a hash of the three, so shards can be written in any order, by any
number of processes, and the tar headers carry fixed mtime/uid/gid/names. Same seed ->
byte-identical shards.
"""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import random
import tarfile
from collections import Counter
from typing import Any, Optional

from dalle3.config.convert import to_dataclass
from dalle3.config.schema import WorldConfig
from dalle3.config.validate import ConfigError, check_positive
from dalle3.config.world import validate_world
from dalle3.utils.io import atomic_path, atomic_write_json
from dalle3.world.captions import make_captions
from dalle3.world.render import render
from dalle3.world.scene import Scene, sample_scene

SPLITS = ("train", "val", "annotated", "judge", "dev")
"""``judge``: ground-truth captions for the evaluation's judge CLIP only; no captioner or LDM reads it.
``dev``: prompts for screening model and evaluation settings, so that ``val`` stays held out."""
SPLIT_SHARD_OFFSET = {"train": 0, "val": 10000, "annotated": 20000, "judge": 30000, "dev": 40000}
"""First shard id of each split (keys stay unique across splits)."""
MAX_SHARD_SIZE = 10000
"""The key holds the index within a shard in 4 digits."""
TAR_MTIME = 946684800
"""Fixed member mtime (2000-01-01) so shards do not depend on when they were written."""


def sample_rng(seed: int, split: str, index: int) -> random.Random:
    """The generator of sample ``index`` of ``split``; independent of every other sample."""
    digest = hashlib.sha256(f"dalle3.world/{seed}/{split}/{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def make_sample(seed: int, split: str, index: int, cfg: Any) -> tuple[Scene, dict[str, str]]:
    """(scene, captions) of one sample; rendering is left to the caller (it is the slow part)."""
    rng = sample_rng(seed, split, index)
    scene = sample_scene(rng, cfg)
    return scene, make_captions(scene, rng, cfg)


def encode_sample(key: str, scene: Scene, captions: dict[str, str], cfg: WorldConfig,
                  extra: Optional[dict] = None) -> list[tuple[str, bytes]]:
    """The tar members of one sample, in img2dataset's order: image, txt, json."""
    image = render(scene, cfg.image_size)
    buf = io.BytesIO()
    if cfg.image_format == "jpg":
        image.save(buf, format="JPEG", quality=cfg.jpeg_quality)
    else:
        image.save(buf, format="PNG")
    meta = {"key": key, "caption": captions["alt"], "status": "success", "error_message": None,
            "width": image.width, "height": image.height,
            "original_width": image.width, "original_height": image.height,
            "ssc": captions["ssc"], "dsc": captions["dsc"], "scene": scene.to_dict(), **(extra or {})}
    return [(f"{key}.{cfg.image_format}", buf.getvalue()),
            (f"{key}.txt", captions["alt"].encode("utf-8")),
            (f"{key}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8"))]


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _keys(shard_id: int, count: int) -> list[str]:
    return [f"{shard_id:05d}{i:04d}" for i in range(count)]


def _record_stats(records: list[tuple[Scene, dict[str, str]]]) -> Counter:
    stats: Counter = Counter(samples=len(records))
    for scene, captions in records:
        stats["with_sign"] += scene.sign is not None
        stats[f"objects_{len(scene.objects)}"] += 1
        stats["alt_empty"] += captions["alt"] == ""
        for kind, text in captions.items():
            stats[f"words_{kind}"] += len(text.split())
    return stats


def write_shard(path: str, shard_id: int, split: str, seed: int, start: int, count: int,
                cfg: WorldConfig) -> Counter:
    """Write samples ``start .. start+count-1`` of ``split`` to ``path`` atomically."""
    records = [make_sample(seed, split, start + i, cfg) for i in range(count)]
    with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, (key, (scene, captions)) in enumerate(zip(_keys(shard_id, count), records)):
            extra = {"split": split, "index": start + i}
            for name, data in encode_sample(key, scene, captions, cfg, extra):
                _add_member(tar, name, data)
    return _record_stats(records)


def _shard_is_complete(path: str, shard_id: int, count: int, fmt: str) -> bool:
    if not os.path.exists(path):
        return False
    expected = [f"{key}.{ext}" for key in _keys(shard_id, count) for ext in (fmt, "txt", "json")]
    try:
        with tarfile.open(path) as tar:
            return tar.getnames() == expected
    except (tarfile.TarError, OSError):
        return False


def _write_shard_job(job: tuple) -> tuple[int, Counter]:
    path, shard_id, split, seed, start, count, cfg = job
    return count, write_shard(path, shard_id, split, seed, start, count, cfg)


def _stats_json(split: str, seed: int, cfg: WorldConfig, shard_ids: list[int],
                totals: Counter) -> dict[str, Any]:
    n = max(totals["samples"], 1)
    return {
        "split": split, "seed": seed, "samples": totals["samples"], "shards": len(shard_ids),
        "first_shard_id": shard_ids[0] if shard_ids else None,
        "image_size": cfg.image_size, "image_format": cfg.image_format,
        "share_with_sign": totals["with_sign"] / n,
        "share_alt_empty": totals["alt_empty"] / n,
        "objects_histogram": {k.split("_")[1]: v for k, v in sorted(totals.items())
                              if k.startswith("objects_")},
        "mean_words": {kind: totals[f"words_{kind}"] / n for kind in ("alt", "ssc", "dsc")},
    }


def write_split(out_dir: str, split: str, n: int, shard_size: int, world_cfg: Any, seed: int,
                workers: int = 1, overwrite: bool = False, progress: bool = True,
                shard_offset: Optional[int] = None) -> list[str]:
    """Write ``n`` samples of ``split`` as ``out_dir/split/{shard_id:05d}.tar``.

    Args:
        out_dir: root of the world; the split gets its own folder.
        split: split name; part of every sample's seed.
        n: number of samples.
        shard_size: samples per shard (the last shard may be shorter), at most 10000.
        world_cfg: a ``WorldConfig`` (or DictConfig with its fields).
        seed: world seed.
        workers: processes; >1 uses a spawn pool, safe after torch is imported (fork is
            not), so a calling script needs the ``if __name__ == "__main__"`` guard.
        overwrite: rewrite shards that are already complete.
        progress: show a tqdm bar.
        shard_offset: first shard id; default from ``SPLIT_SHARD_OFFSET`` (0 for other splits).

    Returns:
        Paths of all shards of the split, in order.
    """
    from tqdm import tqdm

    cfg = to_dataclass(WorldConfig, world_cfg)
    validate_world(cfg)
    check_positive("datagen.shard_size", shard_size)
    if shard_size > MAX_SHARD_SIZE:
        raise ConfigError(f"datagen.shard_size={shard_size} is too large; allowed: 1..{MAX_SHARD_SIZE}")
    offset = SPLIT_SHARD_OFFSET.get(split, 0) if shard_offset is None else shard_offset
    folder = os.path.join(out_dir, split)
    os.makedirs(folder, exist_ok=True)
    jobs, paths, totals = [], [], Counter()
    for i, start in enumerate(range(0, n, shard_size)):
        count, shard_id = min(shard_size, n - start), offset + i
        path = os.path.join(folder, f"{shard_id:05d}.tar")
        paths.append(path)
        if not overwrite and _shard_is_complete(path, shard_id, count, cfg.image_format):
            # Stats without rendering: scenes and captions are cheap to regenerate.
            totals += _record_stats([make_sample(seed, split, start + j, cfg) for j in range(count)])
        else:
            jobs.append((path, shard_id, split, seed, start, count, cfg))
    with tqdm(total=n, initial=n - sum(j[5] for j in jobs), desc=f"world/{split}", unit="img",
              disable=not progress) as bar:
        if workers > 1 and len(jobs) > 1:
            with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                for count, stats in pool.imap_unordered(_write_shard_job, jobs):
                    totals += stats
                    bar.update(count)
        else:
            for job in jobs:
                count, stats = _write_shard_job(job)
                totals += stats
                bar.update(count)
    stats = _stats_json(split, seed, cfg, list(range(offset, offset + len(paths))), totals)
    atomic_write_json(os.path.join(folder, "_stats.json"), stats, indent=2, sort_keys=True)
    return paths


def write_world(out_dir: str, gen_cfg: Any, world_cfg: Any, progress: bool = True) -> dict[str, list[str]]:
    """Write the ``train``, ``val``, ``annotated``, ``judge`` and ``dev`` splits with ``gen_cfg.sizes``.

    Args:
        out_dir: root folder (``paths.data_dir``).
        gen_cfg: a ``DataGenConfig`` (sizes, shard_size, seed, workers, overwrite).
        world_cfg: a ``WorldConfig``.
        progress: show tqdm bars.

    Every split uses ``gen_cfg.seed``; the split name is hashed into each sample's seed,
    so the splits hold different samples.
    """
    return {split: write_split(out_dir, split, getattr(gen_cfg.sizes, split), gen_cfg.shard_size,
                               world_cfg, gen_cfg.seed, workers=gen_cfg.workers,
                               overwrite=gen_cfg.overwrite, progress=progress)
            for split in SPLITS}
