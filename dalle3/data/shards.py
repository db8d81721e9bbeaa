"""Shard specs → shard lists, and the one rule that splits shards over readers.

A *shard spec* is what users write in ``data.train_shards``: a tar path, a folder, a
glob, a brace pattern, a list file, a ``pipe:`` URL, or a comma-separated mix of them.
:func:`expand_shards` turns it into a flat, de-duplicated list in a stable order, and
:func:`assign_shards` gives every (array task, rank) its own disjoint part of it.
"""
from __future__ import annotations

import glob
import os
from typing import Sequence

import braceexpand

from dalle3.config.validate import ConfigError

LIST_SUFFIXES = (".txt", ".list", ".shards")
"A file with one of these suffixes is read as a list of specs, one per line."
REMOTE_PREFIXES = ("pipe:", "http://", "https://", "gs://", "s3://")
"Specs that are handed to webdataset's opener unchanged (no existence check)."
_GLOB_CHARS = ("*", "?", "[")
_MAX_DEPTH = 8  # list files may name list files; stop cycles


def split_top_level(spec: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside ``{...}``, so ``a-{0,1}.tar,b.tar`` is two parts, not three."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(depth - 1, 0)
        elif ch == sep and depth == 0:
            parts.append(spec[start:i])
            start = i + 1
    parts.append(spec[start:])
    return [p.strip() for p in parts if p.strip()]


def _read_list_file(path: str) -> list[str]:
    """Specs in a list file; relative entries are relative to the list file's folder."""
    base = os.path.dirname(os.path.abspath(path))
    specs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            is_local = not line.startswith(REMOTE_PREFIXES)
            specs.append(os.path.join(base, line) if is_local and not os.path.isabs(line) else line)
    return specs


def _expand_one(spec: str, depth: int) -> list[str]:
    if depth > _MAX_DEPTH:
        raise ValueError(f"shard list files nest deeper than {_MAX_DEPTH} levels at {spec!r} (a cycle?)")
    if spec.startswith(REMOTE_PREFIXES):
        return [spec]
    spec = os.path.expanduser(spec)
    if "{" in spec:
        return [s for part in braceexpand.braceexpand(spec) for s in _expand_one(part, depth + 1)]
    if any(ch in spec for ch in _GLOB_CHARS):
        matches = sorted(glob.glob(spec))
        if not matches:
            raise FileNotFoundError(f"no file matches the shard glob {spec!r}")
        return [s for m in matches for s in _expand_one(m, depth + 1)]
    if os.path.isdir(spec):
        return [os.path.join(spec, name) for name in sorted(os.listdir(spec))
                if name.endswith(".tar") and os.path.isfile(os.path.join(spec, name))]
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"shard path does not exist: {spec!r}")
    if spec.endswith(LIST_SUFFIXES):
        out = []
        for line in _read_list_file(spec):
            try:
                out += _expand_one(line, depth + 1)
            except FileNotFoundError as exc:  # name the list file, not only the entry
                raise FileNotFoundError(f"{exc} (named in the list file {spec!r})") from None
        return out
    return [spec]


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Expand a shard spec into a list of shard paths/URLs.

    Forms (mixable with commas outside braces): a ``.tar`` path; a folder (its ``*.tar``
    files, sorted, not recursive); a glob; a brace pattern (``shard-{000..009}.tar``);
    a list file (``.txt``/``.list``/``.shards``: one spec per line, ``#`` comments,
    relative paths relative to the list file); ``pipe:``/``http(s)://``/``s3://``/``gs://``
    URLs, returned as-is (braces in them are *not* expanded: they may be shell syntax).

    Args:
        spec: the spec string, or a sequence of specs.

    Returns:
        Shards in spec order, duplicates dropped (first occurrence kept).

    Raises:
        FileNotFoundError: a local path, brace member or glob names nothing; the
            message names it.
    """
    parts = split_top_level(spec) if isinstance(spec, str) else [str(s) for s in spec]
    out: dict[str, None] = {}
    for part in parts:
        for shard in _expand_one(part, 0):
            out.setdefault(shard, None)
    return list(out)



def validate_shards(key: str, spec: str) -> list[str]:
    """Expand config key ``key``'s shard spec; a one-line ConfigError if it names nothing that exists."""
    try:
        shards = expand_shards(spec)
    except FileNotFoundError as exc:
        raise ConfigError(f"{key}={spec!r}: {exc}") from None
    if not shards:
        raise ConfigError(f"{key}={spec!r} matches no shards; allowed: a folder of .tar files, a glob, "
                          "a brace pattern, a list file or pipe: URLs")
    return shards

def assign_shards(shards: Sequence[str], rank: int, world_size: int,
                  task_id: int = 0, task_count: int = 1) -> list[str]:
    """The shards one reader owns: a pure function of its place in the job.

    Rule: readers are numbered ``reader = task_id * world_size + rank`` out of
    ``readers = task_count * world_size``, and shard ``i`` belongs to reader
    ``i % readers``. So every shard has exactly one owner (disjoint, covering),
    owners differ in count by at most one, and each reader's shards are spread over
    the whole (sorted) list rather than one contiguous block. A reader may own no
    shards when there are fewer shards than readers; callers decide whether that is an
    error (training) or fine (an offline job with nothing left to do).

    Args:
        shards: the full, ordered shard list (the same on every reader).
        rank: global rank within one task (0 .. world_size-1).
        world_size: ranks per task.
        task_id: index of the job-array task (0 .. task_count-1).
        task_count: tasks in the job array.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must lie in 0..world_size-1 (world_size={world_size})")
    if task_count < 1 or not 0 <= task_id < task_count:
        raise ValueError(f"task_id={task_id} must lie in 0..task_count-1 (task_count={task_count})")
    return list(shards[task_id * world_size + rank::task_count * world_size])
