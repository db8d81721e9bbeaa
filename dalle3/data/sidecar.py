"""Caption sidecars: synthetic captions kept beside the shards instead of inside them.

For data sets too large to copy, the recaption job (``recaption.mode=sidecar``) writes
per input shard one small JSON-lines file, ``<sidecar_dir>/<shard stem>.captions.jsonl``
(``000003.tar`` → ``000003.captions.jsonl``), one line per input sample:

    {"key": "000030007", "ssc": "...", "dsc": "..."}                         captioned
    {"key": "000030008", "recaption": "failed", "error": "bad_image"}         not captioned

:class:`JoinSidecar` is the pipeline stage that joins them at load time: it puts each
caption into the raw sample as a ``ssc.txt``/``dsc.txt`` member, exactly what an
output shard of the default mode holds, so decoding and caption choice see no
difference. Sidecar captions win over captions already inside the shard. Sidecars
are parsed as JSON only (never unpickled).

A sample the job could not caption must not train on whatever synthetic captions
its shard already holds (in the synthetic world: the ground truth). Both modes mark
it the same way (:func:`mark_failed_json`): the JSON gets ``"recaption": "failed"``
and ``"recaption_error"``, its ``ssc``/``dsc`` move to ``orig_ssc``/``orig_dsc`` (kept,
never read as captions), and ``ssc.txt``/``dsc.txt`` members are dropped. Output shards
(``mode=shards``) are written that way; in sidecar mode :class:`JoinSidecar` does it at
load time, for a failed line and for a key missing from an existing sidecar. The
caption pick then falls back to alt-text and counts it
(:class:`dalle3.data.captions.PickCaption`).
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
RECAPTION_FIELD = "recaption"
"JSON field (sample JSON and sidecar line) that marks a sample the job could not caption: ``\"failed\"``."
FAILED = "failed"
RECAPTION_ERROR = "recaption_error"
"Sample JSON field: why the job could not caption it (a reason of :data:`dalle3.data.skips.SKIP_REASONS`)."


def is_failed(entry: dict) -> bool:
    """Whether a sidecar line says the job could not caption the sample (older sidecars: only ``error``)."""
    return entry.get(RECAPTION_FIELD) == FAILED or "error" in entry


def json_object(data: bytes) -> Optional[dict]:
    """A JSON member's object, or ``None`` when it is not valid JSON or not an object."""
    try:
        meta = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def mark_failed_json(data: bytes, reason: str) -> Optional[bytes]:
    """A sample JSON marked as not captioned (see the module docstring); ``None`` when it is not a JSON object."""
    meta = json_object(data)
    if meta is None:
        return None
    for kind in CAPTION_FIELDS:
        old = meta.pop(kind, None)
        if isinstance(old, str) and old and f"orig_{kind}" not in meta:
            meta[f"orig_{kind}"] = old
    meta[RECAPTION_FIELD], meta[RECAPTION_ERROR] = FAILED, reason
    return json.dumps(meta, ensure_ascii=False).encode("utf-8")


def strip_captions(sample: dict, reason: str) -> dict:
    """Raw webdataset sample → the same, marked as not captioned: no ``ssc.txt``/``dsc.txt``, JSON marked."""
    for kind in CAPTION_FIELDS:
        sample.pop(f"{kind}.txt", None)
    if "json" in sample:
        marked = mark_failed_json(sample["json"], reason)
        if marked is not None:  # an unreadable JSON is the decoder's to report (bad_json)
            sample["json"] = marked
    return sample


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
    (its samples then train on what the shard itself holds, e.g. alt-text). A failed
    line, or a key the shard's sidecar lacks, strips the sample's own synthetic
    captions (:func:`strip_captions`): the captioners wrote nothing for it.
    """

    def __init__(self, sidecar_dir: str):
        self.sidecar_dir = sidecar_dir
        self._url: Optional[str] = None
        self._entries: Optional[dict[str, dict]] = None

    def entries_for(self, url: str) -> Optional[dict[str, dict]]:
        """The sidecar entries of shard ``url``; ``None`` when it has no sidecar."""
        if url != self._url:  # samples arrive shard by shard: one file read per shard visit
            path = os.path.join(self.sidecar_dir, sidecar_name(url))
            if os.path.exists(path):
                self._entries = read_sidecar(path)
            else:
                log.warning("no caption sidecar %s for shard %s; its samples keep their own captions", path, url)
                self._entries = None
            self._url = url
        return self._entries

    def __call__(self, samples: Iterable[dict]) -> Iterator[dict]:
        for sample in samples:
            entries = self.entries_for(sample.get("__url__", ""))
            if entries is not None:
                entry = entries.get(sample["__key__"])
                if entry is None or is_failed(entry):
                    strip_captions(sample, "not_in_sidecar" if entry is None else str(entry.get("error", FAILED)))
                else:
                    for name in CAPTION_FIELDS:
                        text = entry.get(name)
                        if isinstance(text, str) and text:
                            sample[f"{name}.txt"] = text.encode("utf-8")
            yield sample
