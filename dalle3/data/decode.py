"""Raw webdataset sample (bytes members) → tensors and strings, safely.

Only three kinds of members are ever decoded, by code in this file: images (PIL;
8-bit RGB PNGs already at the side through libpng, ``torchvision.io.decode_png``),
UTF-8 text and JSON. Members with any other suffix (``.pyd``, ``.pickle``, ``.pth``,
...) are not even read out of the tar (:func:`keep_member` is the tar reader's
``select_files``), so no pickle in a shard is ever unpickled. webdataset's own
decoders are not used for the same reason.

Shard layout (img2dataset's, plus ours): ``{key}.png|jpg|jpeg|webp``, ``{key}.txt``
(alt-text), ``{key}.json`` (img2dataset's ``caption``/``width``/``height``/``status``...,
plus our optional ``ssc``, ``dsc`` strings and ``scene`` dict) and, after recaptioning,
``{key}.ssc.txt``/``{key}.dsc.txt``, which win over the JSON fields.
"""
from __future__ import annotations

import io
import json
import struct
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import torch
from PIL import Image, ImageOps

from dalle3.data.skips import BadSample, SkipLog

IMAGE_MEMBERS = ("png", "jpg", "jpeg", "webp")
"Image suffixes, in order of preference when a sample has several."
TEXT_MEMBERS = ("txt", "ssc.txt", "dsc.txt", "json")
KEEP_MEMBERS = frozenset(IMAGE_MEMBERS + TEXT_MEMBERS)


def member_suffix(fname: str) -> str:
    """``"a/000123.ssc.txt"`` → ``"ssc.txt"`` (webdataset's key/suffix split: first dot of the basename)."""
    return fname.rsplit("/", 1)[-1].partition(".")[2].lower()


def keep_member(fname: str) -> bool:
    """Tar-reader filter: read only members this module knows how to decode."""
    return member_suffix(fname) in KEEP_MEMBERS


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_fast_path(data: bytes, image_size: int, limit: int) -> Optional[torch.Tensor]:
    """An 8-bit RGB PNG already at ``image_size`` (the synthetic world's, and most resized web shards'),
    decoded by libpng through ``torchvision.io.decode_png``: ~3x cheaper than PIL at small sides, the
    same pixels. ``None``: not such a PNG (PIL decides)."""
    if len(data) < 33 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    if (width, height) != (image_size, image_size) or data[24:26] != b"\x08\x02" or data[28] != 0:
        return None  # other size, bit depth, colour type (palette, alpha, grey) or interlaced: PIL
    if limit and width * height > limit:
        raise BadSample("too_large", f"{width}x{height} > {limit} pixels")
    from torchvision.io import ImageReadMode, decode_png

    try:
        pixels = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError as exn:  # libpng: truncated, bad CRC, bad zlib stream
        why = str(exn).rsplit(", ", 1)[-1]  # torchvision prefixes its source location
        raise BadSample("bad_image", f"libpng: {why[:200]}") from None
    return pixels.to(torch.float32).mul_(1 / 255)


def decode_image(data: bytes, image_size: int, max_pixels: Optional[int] = None) -> torch.Tensor:
    """Image bytes → FloatTensor[3, S, S] in [0, 1] (shorter side resized, centre crop).

    Args:
        data: encoded image.
        image_size: output side S.
        max_pixels: refuse images whose *header* claims more pixels (checked before any
            pixel is decoded); default ``PIL.Image.MAX_IMAGE_PIXELS``.

    Raises:
        BadSample: ``empty_image``, ``too_large`` or ``bad_image`` (not an image, or
            truncated: ``load()`` decodes all pixel data, so a cut-off file fails here).
    """
    if not data:
        raise BadSample("empty_image")
    limit = max_pixels if max_pixels is not None else (Image.MAX_IMAGE_PIXELS or 0)
    fast = _png_fast_path(data, image_size, limit)
    if fast is not None:
        return fast
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if limit and width * height > limit:
                raise BadSample("too_large", f"{width}x{height} > {limit} pixels")
            if img.format == "JPEG" and min(width, height) >= 2 * image_size:
                img.draft("RGB", (image_size, image_size))  # DCT-domain downscale: far less decoding
            img.load()
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            if rgb.size != (image_size, image_size):
                rgb = ImageOps.fit(rgb, (image_size, image_size), Image.Resampling.BICUBIC)
            # one numpy pass HWC uint8 -> CHW float32 (fewer, larger ops than torch's permute/float/div);
            # inside `with`: closing the image frees its pixels
            chw = np.empty((3, image_size, image_size), dtype=np.float32)
            np.multiply(np.asarray(rgb).transpose(2, 0, 1), np.float32(1 / 255), out=chw)
    except BadSample:
        raise
    except Image.DecompressionBombError as exn:  # PIL's own guard, at 2x its limit
        raise BadSample("too_large", str(exn)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exn:  # UnidentifiedImageError is an OSError
        raise BadSample("bad_image", f"{type(exn).__name__}: {exn}") from None
    return torch.from_numpy(chw)


def decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as exn:
        raise BadSample("bad_text", str(exn)) from None


def decode_json(data: bytes) -> dict:
    try:
        meta = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exn:  # JSONDecodeError is a ValueError
        raise BadSample("bad_json", str(exn)) from None
    if not isinstance(meta, dict):
        raise BadSample("bad_json", f"expected an object, got {type(meta).__name__}")
    return meta


def _text(raw: dict, member: str, meta: dict, field: str) -> str:
    """A caption from its txt member if present (it wins), else from a JSON field, else ""."""
    if member in raw:
        return decode_text(raw[member])
    value = meta.get(field)
    return value.strip() if isinstance(value, str) else ""


def decode_sample(raw: dict, image_size: int, max_pixels: Optional[int] = None) -> dict:
    """One raw sample (``__key__`` + bytes members) → decoded sample.

    Returns:
        ``{key, url, image: FloatTensor[3,S,S], alt, ssc, dsc, scene_json}``; missing
        captions are ``""``, ``scene_json`` is the JSON ``scene`` re-serialised (``""``
        when absent).

    Raises:
        BadSample: the sample is unusable; ``reason`` says why.
    """
    image_member = next((m for m in IMAGE_MEMBERS if m in raw), None)
    if image_member is None:
        raise BadSample("no_image", f"members: {sorted(k for k in raw if not k.startswith('__'))}")
    meta = decode_json(raw["json"]) if "json" in raw else {}
    scene: Any = meta.get("scene")
    return {
        "key": raw["__key__"],
        "url": raw.get("__url__", ""),
        "alt": _text(raw, "txt", meta, "caption"),
        "ssc": _text(raw, "ssc.txt", meta, "ssc"),
        "dsc": _text(raw, "dsc.txt", meta, "dsc"),
        "scene_json": "" if scene is None else scene if isinstance(scene, str) else json.dumps(scene),
        "image": decode_image(raw[image_member], image_size, max_pixels),
    }


class DecodeSample:
    """Pipeline stage: decode raw samples; skip, count and report the bad ones.

    ``fn`` replaces :func:`decode_sample` for other shard kinds (e.g. latents): a
    function ``raw -> sample`` that raises :class:`BadSample` for unusable samples.
    """

    def __init__(self, image_size: int, skips: SkipLog, max_pixels: Optional[int] = None,
                 fn: Optional[Callable[[dict], dict]] = None):
        self.image_size, self.skips, self.max_pixels, self.fn = image_size, skips, max_pixels, fn

    def __call__(self, samples: Iterable[dict]) -> Iterator[dict]:
        for raw in samples:
            try:
                sample = self.fn(raw) if self.fn is not None else decode_sample(raw, self.image_size, self.max_pixels)
            except BadSample as bad:
                self.skips.record(raw.get("__key__", "?"), bad.reason, bad.detail, raw.get("__url__"))
                continue
            self.skips.n_good += 1
            yield sample
