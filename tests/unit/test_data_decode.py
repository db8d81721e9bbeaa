"""Decoding: images and captions come out right; every bad sample is skipped, counted and named."""
from __future__ import annotations

import io
import json
import logging
import pickle
import tarfile

import pytest
import torch
from PIL import Image

from dalle3.config.schema import CaptionConfig
from dalle3.data.decode import BadSample, DecodeSample, decode_image, decode_sample, decode_text
from dalle3.data.pipeline import build_pipeline
from dalle3.data.skips import SkipLog
from dalle3.data.tarstream import TarSamples, split_name
from helpers.shards import (BAD_KINDS, BAD_REASON, alt_text, dsc_text, huge_png, image_bytes, malicious_pickle,
                            sample_key, scene_of, ssc_text, write_shard, write_shards)


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == logging.WARNING]


@pytest.fixture
def records():
    handler = Records()
    logger = logging.getLogger("dalle3")  # propagate=False: caplog would not see it
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def read_all(paths, **kwargs) -> list[dict]:
    return list(build_pipeline(paths, batch_size=4, mode="once", **kwargs))


def test_png_and_jpeg_decode_to_float_chw_in_unit_range():
    for fmt, tol in (("png", 0.0), ("jpg", 0.05)):
        image = decode_image(image_bytes("000000007", 64, fmt), 64)
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        n = 7  # the helper's background colour for key 7
        expected = torch.tensor([(n * 37) % 256, (n * 91) % 256, (n * 53) % 256]) / 255
        assert torch.allclose(image[:, 2, 2], expected, atol=tol + 1e-6)
        assert torch.allclose(image[:, 20, 20], torch.ones(3), atol=tol + 1e-6)  # the white square


def test_rgb_pngs_at_size_decode_through_libpng_to_the_same_pixels_and_errors_as_pil(monkeypatch):
    """The libpng fast path (8-bit RGB PNG already at the side): PIL's pixels exactly; bad bytes stay skips."""
    import numpy as np

    from dalle3.data import decode as dec

    data = image_bytes("000000042", 32, "png")
    fast = decode_image(data, 32)
    pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1).astype(np.float32)
    assert torch.equal(fast, torch.from_numpy(pil * np.float32(1 / 255)))
    monkeypatch.setattr(dec, "_png_fast_path", lambda *a: None)  # the PIL path agrees bit for bit
    assert torch.equal(decode_image(data, 32), fast)
    monkeypatch.undo()
    assert dec._png_fast_path(image_bytes("000000042", 48, "png"), 32, 0) is None  # resized by PIL instead
    corrupt = data[:40] + bytes(10) + data[50:]  # the IDAT chunk's bytes (and its CRC) broken
    for bad in (data[: len(data) // 2], corrupt):
        with pytest.raises(BadSample) as err:
            decode_image(bad, 32)
        assert err.value.reason == "bad_image" and "libpng" in str(err.value)
    with pytest.raises(BadSample, match="too_large"):
        decode_image(huge_png(32, 32), 32, max_pixels=100)


def test_images_are_resized_and_centre_cropped_to_image_size():
    img = Image.new("RGB", (96, 64), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 8, 64))  # a blue strip at the left edge, cropped away
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    out = decode_image(buf.getvalue(), 32)
    assert out.shape == (3, 32, 32)
    assert torch.allclose(out[:, :, 0], torch.tensor([1.0, 0.0, 0.0])[:, None].expand(3, 32), atol=0.02)
    grey = io.BytesIO()
    Image.new("L", (64, 64), 128).save(grey, format="PNG")
    assert decode_image(grey.getvalue(), 64).shape == (3, 64, 64)


def test_decode_sample_fields_and_scene_json():
    raw = {"__key__": "000000003", "__url__": "x.tar", "png": image_bytes("000000003"),
           "txt": b"alt 000000003", "json": json.dumps({"ssc": "s", "dsc": "d", "scene": scene_of("000000003")}).encode()}
    sample = decode_sample(raw, 64)
    assert (sample["key"], sample["alt"], sample["ssc"], sample["dsc"]) == ("000000003", "alt 000000003", "s", "d")
    assert json.loads(sample["scene_json"]) == scene_of("000000003")
    bare = decode_sample({"__key__": "k", "jpg": image_bytes("000000003", fmt="jpg")}, 32)
    assert (bare["alt"], bare["ssc"], bare["dsc"], bare["scene_json"]) == ("", "", "", "")


def test_txt_members_win_over_json_fields(tmp_path):
    write_shard(tmp_path / "a.tar", 0, 3, txt_captions=True)
    batches = read_all([str(tmp_path / "a.tar")])
    assert batches[0]["ssc"] == [f"txt {ssc_text(sample_key(0, i))}" for i in range(3)]
    assert batches[0]["dsc"] == [f"txt {dsc_text(sample_key(0, i))}" for i in range(3)]
    assert batches[0]["alt"] == [alt_text(sample_key(0, i)) for i in range(3)]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_each_bad_sample_is_skipped_counted_and_reported_with_its_key(tmp_path, kind, records):
    good = write_shard(tmp_path / "a.tar", 0, 6, bad={1: kind, 4: kind})
    batches = read_all([str(tmp_path / "a.tar")])
    assert [k for b in batches for k in b["key"]] == good
    skipped = [s for b in batches for s in zip(b["skipped"]["key"], b["skipped"]["reason"])]
    bad_keys = [sample_key(0, 1), sample_key(0, 4)]
    assert skipped == [(k, BAD_REASON[kind]) for k in bad_keys]
    assert sum(int(b["n_skipped"]) for b in batches) == 2
    warned = records.warnings()
    assert len(warned) == 2 and all(k in w and BAD_REASON[kind] in w for k, w in zip(bad_keys, warned))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_our_pixel_limit_applies_before_decoding():
    with pytest.raises(BadSample) as bad:
        decode_image(image_bytes("000000001", 64), 64, max_pixels=64 * 64 - 1)
    assert bad.value.reason == "too_large"
    with pytest.raises(BadSample) as bad:  # over PIL's warning limit, under its error limit
        decode_image(huge_png(10_000, 10_000), 64)
    assert bad.value.reason == "too_large"
    skips = SkipLog()
    raw = [{"__key__": f"k{i}", "png": image_bytes(f"00000000{i}")} for i in range(3)]
    assert list(DecodeSample(64, skips, max_pixels=100)(raw)) == []
    assert skips.counts == {"too_large": 3} and [k for k, _ in skips.drain()] == ["k0", "k1", "k2"]


def test_skip_warnings_are_rate_limited_but_counts_are_exact(records):
    skips = SkipLog(warn_first=3, warn_every=10)
    for i in range(25):
        skips.record(f"k{i}", "bad_image")
    assert skips.counts == {"bad_image": 25} and len(skips.drain()) == 25 and skips.drain() == []
    warned = records.warnings()
    assert len(warned) == 5  # k0..k2 one by one, then a summary at the 10th and 20th skip
    assert "k0" in warned[0] and "10 samples" in warned[3] and "20 samples" in warned[4]


def test_pickle_members_are_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    payload = malicious_pickle(marker)
    pickle.loads(payload)  # the payload really is an exploit ...
    assert marker.exists()
    marker.unlink()
    write_shard(tmp_path / "a.tar", 0, 3, extra_members={0: {"pyd": payload, "pickle": payload},
                                                         2: {"pth": payload}})
    batches = read_all([str(tmp_path / "a.tar")], caption=CaptionConfig(source="dsc"))
    assert [k for b in batches for k in b["key"]] == [sample_key(0, i) for i in range(3)]
    assert not marker.exists()  # ... and reading the shard did not run it
    raw = list(TarSamples(SkipLog())([{"url": str(tmp_path / "a.tar")}]))
    assert all(set(r) <= {"__key__", "__url__", "png", "txt", "json"} for r in raw)


def test_a_cut_off_tar_keeps_earlier_samples_and_moves_on(tmp_path, records):
    paths, _ = write_shards(tmp_path, 2, 6)
    data = open(paths[0], "rb").read()
    with open(paths[0], "wb") as f:
        f.write(data[: len(data) // 2])
    keys = [k for b in read_all(paths) for k in b["key"]]
    first = [k for k in keys if k.startswith("00000")]
    assert 0 < len(first) < 6 and first == [sample_key(0, i) for i in range(len(first))]
    assert [k for k in keys if k.startswith("00001")] == [sample_key(1, i) for i in range(6)]
    # the sample being read when the data ran out is dropped and named, even though the cut
    # fell on a header boundary (where tarfile itself stops without complaint)
    cut_key = sample_key(0, len(first))
    assert any(cut_key in w and "tar_error" in w for w in records.warnings())


def test_a_missing_shard_file_is_a_tar_error_not_a_crash(tmp_path):
    paths, _ = write_shards(tmp_path, 1, 2)
    batches = read_all([str(tmp_path / "gone.tar"), *paths])
    assert [k for b in batches for k in b["key"]] == [sample_key(0, 0), sample_key(0, 1)]
    assert batches[0]["skipped"] == {"key": [str(tmp_path / "gone.tar")], "reason": ["tar_error"]}


def test_member_names_split_like_webdataset():
    assert split_name("000123.ssc.txt") == ("000123", "ssc.txt")
    assert split_name("a.b/000123.JPG") == ("a.b/000123", "jpg")
    assert split_name("dir/.hidden") is None and split_name("noext") is None


def test_samples_without_json_or_txt_still_load(tmp_path):
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("k1.png", image_bytes("000000001")), ("k2.jpg", image_bytes("000000002", fmt="jpg")),
                           ("k2.txt", b"only alt")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    batch = read_all([str(path)], caption=CaptionConfig(source="dsc"))[0]
    assert batch["key"] == ["k1", "k2"] and batch["caption"] == ["", "only alt"]
    assert batch["caption_kind"] == ["alt", "alt"] and batch["scene"] == ["", ""]


def test_other_shard_kinds_plug_in_their_own_decode_and_members(tmp_path):
    write_shard(tmp_path / "a.tar", 0, 4, bad={2: "bad_text"})
    seen_members = []

    def decode_text_only(raw):
        seen_members.append(sorted(k for k in raw if not k.startswith("__")))
        return {"key": raw["__key__"], "alt": decode_text(raw["txt"])}

    samples = list(build_pipeline([str(tmp_path / "a.tar")], decode_fn=decode_text_only, keep={"txt"}))
    assert [s["alt"] for s in samples] == [alt_text(sample_key(0, i)) for i in (0, 1, 3)]
    assert seen_members == [["txt"]] * 4  # the image and JSON were never read out of the tar
