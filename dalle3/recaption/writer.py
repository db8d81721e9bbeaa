"""Output side of the recaption job: one writer per shard in flight, to a temporary file.

* :class:`TarOutput` (``mode=shards``): the input sample's members, in order and byte for
  byte, except that the JSON gets ``ssc``/``dsc`` fields and ``{key}.ssc.txt`` /
  ``{key}.dsc.txt`` members are added after the sample's other members (an older
  synthetic caption member of the same kind is replaced). A sample that could not be
  captioned keeps its other members unchanged, but is marked failed
  (:func:`dalle3.data.sidecar.mark_failed_json`: ``"recaption": "failed"``, its old
  ``ssc``/``dsc`` moved to ``orig_ssc``/``orig_dsc``, ``ssc.txt``/``dsc.txt`` dropped), so
  that training falls back to its alt-text instead of reading, e.g., the synthetic
  world's ground truth as if the captioners had written it.
* :class:`SidecarOutput` (``mode=sidecar``): one JSON line per input sample
  (:mod:`dalle3.data.sidecar`), ``"recaption": "failed"`` with the reason for a failed one.

Both count what they wrote, for the shard's manifest entry: output samples,
captioned samples, failed samples by reason, and every failure with key and reason.
"""
from __future__ import annotations

import json
import tarfile
from collections import Counter
from typing import Optional

from dalle3.data.sidecar import FAILED, RECAPTION_ERROR, RECAPTION_FIELD, json_object, mark_failed_json
from dalle3.data.tarstream import ustar_header
from dalle3.recaption.data import RawSample

TAR_MTIME = 946684800
"Fixed member mtime (2000-01-01): the same input and captions give the same bytes."


def recaptioned_json(data: bytes, captions: dict[str, str]) -> Optional[bytes]:
    """The JSON member with the synthetic captions set; ``None`` when it is not a JSON object.

    A differing caption already in the JSON (e.g. the synthetic world's ground truth)
    is kept as ``orig_<kind>``, so recaptioning never destroys information. A failure
    mark from an earlier recaption of the same sample is dropped.
    """
    meta = json_object(data)
    if meta is None:
        return None
    for kind, text in captions.items():
        old = meta.get(kind)
        if isinstance(old, str) and old != text and f"orig_{kind}" not in meta:
            meta[f"orig_{kind}"] = old
        meta[kind] = text
    if meta.get(RECAPTION_FIELD) == FAILED:
        meta.pop(RECAPTION_FIELD)
        meta.pop(RECAPTION_ERROR, None)
    return json.dumps(meta, ensure_ascii=False).encode("utf-8")


class ShardOutput:
    """Bookkeeping shared by both writers."""

    def __init__(self, path: str):
        self.path = path
        self.samples = self.captioned = self.json_untouched = 0
        self.failed: Counter[str] = Counter()
        self.errors: list[dict] = []

    def add(self, sample: RawSample, captions: Optional[dict[str, str]]) -> None:
        """Write one sample; ``captions`` is ``{"ssc": ..., "dsc": ...}``, or ``None`` for a failed sample."""
        self.samples += 1
        if captions is None:
            reason, detail = sample.error or ("not_captioned", "")
            self.failed[reason] += 1
            self.errors.append({"key": sample.key, "reason": reason, "detail": detail})
        else:
            self.captioned += 1
        self.write(sample, captions)

    def write(self, sample: RawSample, captions: Optional[dict[str, str]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def stats(self) -> dict:
        return {"output_samples": self.samples, "captioned": self.captioned, "failed": dict(self.failed),
                "errors": self.errors, "json_untouched": self.json_untouched}


class TarOutput(ShardOutput):
    """Write an img2dataset-layout shard (see the module docstring).

    Byte for byte what ``tarfile.open(path, "w")`` + ``addfile`` write (POSIX ustar
    headers, PAX where a name needs it, two zero blocks and padding to a 10 KiB record),
    without tarfile's per-member objects.
    """

    def __init__(self, path: str):
        super().__init__(path)
        self.file = open(path, "wb", buffering=1 << 20)

    def _add(self, name: str, data: bytes) -> None:
        self.file.write(ustar_header(name, len(data), TAR_MTIME))
        self.file.write(data)
        if len(data) % tarfile.BLOCKSIZE:
            self.file.write(b"\0" * (tarfile.BLOCKSIZE - len(data) % tarfile.BLOCKSIZE))

    def write(self, sample: RawSample, captions: Optional[dict[str, str]]) -> None:
        if captions is None:
            self.write_failed(sample)
            return
        replaced = {f"{kind}.txt" for kind in captions}
        for name, suffix, data in sample.members:
            if suffix in replaced:
                continue  # an older synthetic caption: the new one is added below
            if suffix == "json":
                new = recaptioned_json(data, captions)
                if new is None:
                    self.json_untouched += 1
                data = data if new is None else new
            self._add(name, data)
        for kind, text in captions.items():
            self._add(f"{sample.key}.{kind}.txt", text.encode("utf-8"))

    def write_failed(self, sample: RawSample) -> None:
        """Copy a sample that could not be captioned, marked failed (see the module docstring)."""
        reason = (sample.error or ("not_captioned", ""))[0]
        for name, suffix, data in sample.members:
            if suffix in ("ssc.txt", "dsc.txt"):
                continue  # a caption not written by these captioners must not train as theirs
            if suffix == "json":
                data = mark_failed_json(data, reason) or data  # not an object: the decoder skips it (bad_json)
            self._add(name, data)

    def close(self) -> None:
        if self.file.closed:
            return
        self.file.write(b"\0" * (2 * tarfile.BLOCKSIZE))  # end of archive, then pad to a whole record
        if self.file.tell() % tarfile.RECORDSIZE:
            self.file.write(b"\0" * (tarfile.RECORDSIZE - self.file.tell() % tarfile.RECORDSIZE))
        self.file.close()


class SidecarOutput(ShardOutput):
    """Write the shard's caption sidecar (:mod:`dalle3.data.sidecar`)."""

    def __init__(self, path: str):
        super().__init__(path)
        self.file = open(path, "w", encoding="utf-8")

    def write(self, sample: RawSample, captions: Optional[dict[str, str]]) -> None:
        entry: dict = {"key": sample.key}
        if captions is None:
            entry[RECAPTION_FIELD], entry["error"] = FAILED, (sample.error or ("not_captioned", ""))[0]
        else:
            entry.update(captions)
        self.file.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.file.close()
