"""Caption sidecars: synthetic captions kept beside the shards instead of inside them.

For data sets too large to copy, the recaption job (``recaption.mode=sidecar``) writes
per input shard one small JSON-lines file, ``<sidecar_dir>/<shard stem>.captions.jsonl``
(``000003.tar`` → ``000003.captions.jsonl``), one line per input sample:

    {"key": "000030007", "ssc": "...", "dsc": "..."}     captioned
    {"key": "000030008", "error": "bad_image"}            not captioned (bad sample)

:class:`JoinSidecar` is the pipeline stage that joins them at load time: it puts each
caption into the raw sample as a ``ssc.txt``/``dsc.txt`` member, exactly what an
output shard of the default mode holds, so decoding and caption choice see no
difference. Sidecar captions win over captions already inside the shard. Sidecars
are parsed as JSON only (never unpickled).
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Iterator, Optional

from dalle3.utils.logging import get_logger

log = get_logger(__name__)
SIDECAR_SUFFIX = ".captions.jsonl"
CAPTION_FIELDS = ("ssc", "dsc")
"Sidecar fields joined into samples, each as the ``<field>.txt`` member."


def sidecar_name(shard: str) -> str:
    """Sidecar file name of a shard: its base name with ``.tar`` replaced (``a/000003.tar`` → ``000003.captions.jsonl``)."""
    base = os.path.basename(shard.rstrip("/"))
    for ext in (".tar.gz", ".tgz", ".tar"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base + SIDECAR_SUFFIX


def read_sidecar(path: str) -> dict[str, dict]:
    """``{key: entry}`` of one sidecar file; later lines win for a repeated key.

    Raises:
        ValueError: a line is not a JSON object with a string ``key`` (the path and line number are named).
    """
    out: dict[str, dict] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError as exn:
                raise ValueError(f"{path}:{lineno}: not JSON ({exn})") from None
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                raise ValueError(f"{path}:{lineno}: expected an object with a string 'key'")
            out[entry["key"]] = entry
    return out


class JoinSidecar:
    """Pipeline stage: add each sample's sidecar captions as ``ssc.txt``/``dsc.txt`` members.

    Args:
        sidecar_dir: folder of ``*.captions.jsonl`` files (see the module docstring).

    A shard without a sidecar passes through unchanged, with one warning per shard
    (its samples then train on what the shard itself holds, e.g. alt-text).
    """

    def __init__(self, sidecar_dir: str):
        self.sidecar_dir = sidecar_dir
        self._url: Optional[str] = None
        self._entries: dict[str, dict] = {}

    def entries_for(self, url: str) -> dict[str, dict]:
        if url != self._url:  # samples arrive shard by shard: one file read per shard visit
            path = os.path.join(self.sidecar_dir, sidecar_name(url))
            if os.path.exists(path):
                self._entries = read_sidecar(path)
            else:
                log.warning("no caption sidecar %s for shard %s; its samples keep their own captions", path, url)
                self._entries = {}
            self._url = url
        return self._entries

    def __call__(self, samples: Iterable[dict]) -> Iterator[dict]:
        for sample in samples:
            entry = self.entries_for(sample.get("__url__", "")).get(sample["__key__"])
            if entry:
                for name in CAPTION_FIELDS:
                    text = entry.get(name)
                    if isinstance(text, str) and text:
                        sample[f"{name}.txt"] = text.encode("utf-8")
            yield sample
