"""Tiny tar shards in img2dataset's layout, written with plain ``tarfile`` + PIL.

Keys encode the shard and the index (``sample_key(3, 7) == "000030007"``, like
img2dataset's ``{shard:05d}{index:04d}``) and every caption encodes its key, so a test
can assert exactly which samples and which captions were read. Images are real PNG or
JPEG bytes whose colour also depends on the key.

Bad samples can be injected per index (:data:`BAD_KINDS`) and extra members (e.g. a
malicious pickle) added to any sample.
"""
from __future__ import annotations

import io
import json
import pickle
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Iterable, Mapping, Optional

from PIL import Image

BAD_KINDS = ("truncated", "empty", "no_image", "bad_text", "bad_json", "huge")
"Injectable defects: cut-off image, zero-byte image, no image member, non-UTF-8 alt-text, broken JSON, PNG header claiming 100000x100000 pixels."
BAD_REASON = {"truncated": "bad_image", "empty": "empty_image", "no_image": "no_image", "bad_text": "bad_text",
              "bad_json": "bad_json", "huge": "too_large"}
"The skip reason the data layer should report for each injected defect."


def sample_key(shard: int, index: int) -> str:
    return f"{shard:05d}{index:04d}"


def shard_of(key: str) -> int:
    return int(key[:5])


def alt_text(key: str) -> str:
    return f"alt {key}"


def ssc_text(key: str) -> str:
    return f"ssc {key}"


def dsc_text(key: str) -> str:
    return f"dsc {key}"


def scene_of(key: str) -> dict:
    return {"key": key, "objects": [{"shape": "circle", "colour": "red"}]}


def image_bytes(key: str, size: int = 64, fmt: str = "png") -> bytes:
    """A real encoded image whose colour depends on the key."""
    n = int(key)
    img = Image.new("RGB", (size, size), ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256))
    img.paste((255, 255, 255), (size // 4, size // 4, size // 2, size // 2))
    buf = io.BytesIO()
    img.save(buf, format="JPEG" if fmt in ("jpg", "jpeg") else "PNG", **({"quality": 95} if fmt != "png" else {}))
    return buf.getvalue()


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG signature + IHDR (correct CRC) claiming a giant image, then a tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


class _Exploit:
    """Unpickling this writes ``marker``: proof that something called ``pickle.loads``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def malicious_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Exploit(str(marker)))


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def sample_members(key: str, *, fmt: str = "png", size: int = 64, extra_fields: bool = True,
                   txt_captions: bool = False, bad: Optional[str] = None) -> dict[str, bytes]:
    """The members of one sample, suffix → bytes, in img2dataset's layout."""
    meta = {"key": key, "caption": alt_text(key), "width": size, "height": size, "status": "success",
            "url": f"http://example.com/{key}.{fmt}", "error_message": None}
    if extra_fields:
        meta.update(ssc=ssc_text(key), dsc=dsc_text(key), scene=scene_of(key))
    members = {fmt: image_bytes(key, size, fmt), "txt": alt_text(key).encode(), "json": json.dumps(meta).encode()}
    if txt_captions:
        members["ssc.txt"], members["dsc.txt"] = f"txt {ssc_text(key)}".encode(), f"txt {dsc_text(key)}".encode()
    if bad == "truncated":
        members[fmt] = members[fmt][: len(members[fmt]) // 2]
    elif bad == "empty":
        members[fmt] = b""
    elif bad == "no_image":
        del members[fmt]
    elif bad == "bad_text":
        members["txt"] = b"caf\xe9 \xff\xfe not utf-8"
    elif bad == "bad_json":
        members["json"] = b'{"key": "' + key.encode() + b'", "caption": '
    elif bad == "huge":
        members[fmt] = huge_png()
        members["png"] = members.pop(fmt)
    elif bad is not None:
        raise ValueError(f"bad={bad!r}; allowed: {BAD_KINDS}")
    return members


def write_shard(path: Path | str, shard: int, n: int, *, fmt: str = "png", size: int = 64,
                extra_fields: bool = True, txt_captions: bool = False, bad: Optional[Mapping[int, str]] = None,
                extra_members: Optional[Mapping[int, Mapping[str, bytes]]] = None) -> list[str]:
    """Write one shard of ``n`` samples; return the keys of its *good* samples.

    Args:
        path: the ``.tar`` to write.
        shard: shard number (encoded in the keys).
        n: samples in the shard.
        fmt: ``png`` or ``jpg``.
        size: image side.
        extra_fields: add our ``ssc``/``dsc``/``scene`` JSON fields (False: plain img2dataset).
        txt_captions: also write ``{key}.ssc.txt``/``{key}.dsc.txt`` (text: ``"txt ssc {key}"``).
        bad: index → one of :data:`BAD_KINDS`.
        extra_members: index → {suffix: bytes} added to that sample (e.g. ``{"pyd": ...}``).
    """
    bad, extra_members = dict(bad or {}), dict(extra_members or {})
    good = []
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            key = sample_key(shard, i)
            members = sample_members(key, fmt=fmt, size=size, extra_fields=extra_fields,
                                     txt_captions=txt_captions, bad=bad.get(i))
            members.update(extra_members.get(i, {}))
            for suffix, data in members.items():
                _add(tar, f"{key}.{suffix}", data)
            if i not in bad:
                good.append(key)
    return good


def write_shards(folder: Path | str, n_shards: int, per_shard: int, *, first: int = 0,
                 prefix: str = "shard", **kwargs) -> tuple[list[str], list[str]]:
    """Write ``n_shards`` shards ``{prefix}-{i:05d}.tar``; return (paths, good keys)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths, keys = [], []
    for shard in range(first, first + n_shards):
        path = folder / f"{prefix}-{shard:05d}.tar"
        keys += write_shard(path, shard, per_shard, **kwargs)
        paths.append(str(path))
    return paths, keys


def keys_in(paths: Iterable[str]) -> set[str]:
    """Every sample key present in the given shards (read back with tarfile)."""
    keys = set()
    for path in paths:
        with tarfile.open(path) as tar:
            keys.update(m.name.split(".", 1)[0] for m in tar.getmembers())
    return keys
