"""The recaption job's pure parts: shard planning, output rewriting, sidecars, summaries, config checks."""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from dalle3.config import ConfigError, compose
from dalle3.config.schema import CaptionConfig
from dalle3.data.offline import commit_shard, plan_shards, remove_stale_tmp, tmp_output
from dalle3.data.pipeline import build_pipeline
from dalle3.data.sidecar import mark_failed_json, read_sidecar, sidecar_name
from dalle3.dist.env import ArrayTask, DistEnv
from dalle3.recaption.data import RawSample, RecaptionSource, ShardEnd, read_raw_samples
from dalle3.recaption.stage import check_config
from dalle3.recaption.summary import merge
from dalle3.recaption.writer import TAR_MTIME, SidecarOutput, TarOutput
from helpers.shards import BAD_REASON, malicious_pickle, sample_key, write_shard


def _shards(n: int) -> list[str]:
    return [f"/data/train/{i:05d}.tar" for i in range(n)]


@pytest.mark.parametrize("n_shards, world, tasks", [
    (7, 1, 1), (7, 2, 1), (7, 3, 1), (3, 8, 1), (11, 2, 4), (5, 4, 2), (1, 3, 1)])
def test_every_shard_has_exactly_one_owner(tmp_path, n_shards, world, tasks):
    shards = _shards(n_shards)
    owners: dict[str, list] = {s: [] for s in shards}
    for t in range(tasks):
        for r in range(world):
            plan = plan_shards(shards, str(tmp_path), DistEnv(rank=r, world_size=world), ArrayTask(t, tasks))
            assert plan.todo == plan.mine and plan.skipped == []
            for s in plan.mine:
                owners[s].append((t, r))
    assert all(len(o) == 1 for o in owners.values()), owners
    loads = [sum(1 for o in owners.values() if o[0] == (t, r)) for t in range(tasks) for r in range(world)]
    assert max(loads) - min(loads) <= 1  # more readers than shards: some own nothing, none owns two


def test_completed_shards_are_skipped_unless_overwrite(tmp_path):
    shards = _shards(4)
    out = str(tmp_path)
    tmp = tmp_output(os.path.join(out, "00002.tar"), DistEnv(), ArrayTask())
    Path(tmp).write_bytes(b"x")
    commit_shard(out, shards[2], tmp, "00002.tar", {"input_samples": 1, "output_samples": 1})
    (tmp_path / "00003.tar").write_bytes(b"renamed, then killed before its manifest entry")
    plan = plan_shards(shards, out, DistEnv(), ArrayTask())
    assert plan.skipped == [shards[2]] and plan.todo == [shards[0], shards[1], shards[3]]
    assert plan_shards(shards, out, DistEnv(), ArrayTask(), overwrite=True).todo == shards
    sidecars = plan_shards(shards, out, DistEnv(), ArrayTask(), name_fn=sidecar_name)
    assert sidecars.todo == shards  # another output kind is tracked by its own names


def test_stale_tmp_files_of_one_shard_are_removed(tmp_path):
    final = str(tmp_path / "00001.tar")
    for suffix in ("tmp-r0-t0", "tmp-r3-t1"):
        Path(f"{final}.{suffix}").write_bytes(b"partial")
    Path(tmp_path / "00010.tar.tmp-r0-t0").write_bytes(b"another shard's")
    assert remove_stale_tmp(final) == 2
    assert sorted(os.listdir(tmp_path)) == ["00010.tar.tmp-r0-t0"]


def _members(path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def test_tar_output_keeps_every_member_and_adds_the_captions(tmp_path):
    meta = {"caption": "alt", "ssc": "truth short"}
    good = RawSample("k1", [("k1.png", "png", b"PNGDATA"), ("k1.json", "json", json.dumps(meta).encode()),
                            ("k1.pyd", "pyd", b"\x80\x04pickle"), ("k1.ssc.txt", "ssc.txt", b"old")])
    bad = RawSample("k2", [("k2.png", "png", b""), ("k2.json", "json", b"{broken")], error=("empty_image", ""))
    nojson = RawSample("k3", [("k3.jpg", "jpg", b"J"), ("k3.json", "json", b"[1]")])
    truth = {"caption": "alt 4", "ssc": "truth s4", "dsc": "truth d4", "scene": {"n": 1}}
    big = RawSample("k4", [("k4.png", "png", b"BIG"), ("k4.json", "json", json.dumps(truth).encode()),
                           ("k4.dsc.txt", "dsc.txt", b"an older caption")], error=("too_large", "9x9 > 4"))
    out = TarOutput(str(tmp_path / "o.tar"))
    out.add(good, {"ssc": "new short", "dsc": "new long"})
    out.add(bad, None)
    out.add(nojson, {"ssc": "s3", "dsc": "d3"})
    out.add(big, None)
    out.close()
    members = _members(tmp_path / "o.tar")
    assert [n for n, _ in members] == ["k1.png", "k1.json", "k1.pyd", "k1.ssc.txt", "k1.dsc.txt",
                                       "k2.png", "k2.json", "k3.jpg", "k3.json", "k3.ssc.txt", "k3.dsc.txt",
                                       "k4.png", "k4.json"]
    data = dict(members)
    assert data["k1.png"] == b"PNGDATA" and data["k1.pyd"] == b"\x80\x04pickle"  # copied, never interpreted
    assert data["k1.ssc.txt"] == b"new short" and data["k1.dsc.txt"] == b"new long"
    assert json.loads(data["k1.json"]) == {"caption": "alt", "ssc": "new short", "dsc": "new long",
                                           "orig_ssc": "truth short"}
    assert data["k2.json"] == b"{broken" and data["k3.json"] == b"[1]"  # untouched
    # not captioned: its ground truth is kept aside, never where the data layer reads synthetic captions
    assert data["k4.png"] == b"BIG" and json.loads(data["k4.json"]) == {
        "caption": "alt 4", "scene": {"n": 1}, "orig_ssc": "truth s4", "orig_dsc": "truth d4",
        "recaption": "failed", "recaption_error": "too_large"}
    assert out.stats() == {"output_samples": 4, "captioned": 2, "failed": {"empty_image": 1, "too_large": 1},
                           "errors": [{"key": "k2", "reason": "empty_image", "detail": ""},
                                      {"key": "k4", "reason": "too_large", "detail": "9x9 > 4"}],
                           "json_untouched": 1}


def test_tar_output_is_byte_for_byte_what_tarfile_writes(tmp_path):
    """The direct header writer: the same archive as tarfile's, PAX names included, and readable by it."""
    names = ["000001.png", "000001.json", "a/b/000002.ssc.txt", "x" * 100, "y" * 101 + ".txt", "café.dsc.txt"]
    members = [(n, bytes(range(256)) * (i % 4) + b"z" * i) for i, n in enumerate(names * 3)]  # sizes 0..~800
    out = TarOutput(str(tmp_path / "fast.tar"))
    for name, data in members:
        out._add(name, data)
    out.close()
    with tarfile.open(tmp_path / "ref.tar", "w") as ref:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o644
            ref.addfile(info, io.BytesIO(data))
    assert (tmp_path / "fast.tar").read_bytes() == (tmp_path / "ref.tar").read_bytes()
    assert _members(tmp_path / "fast.tar") == members


def test_a_sample_captioned_on_a_rerun_loses_its_failure_mark(tmp_path):
    failed = {"caption": "a", "orig_dsc": "truth", "recaption": "failed", "recaption_error": "too_large"}
    out = TarOutput(str(tmp_path / "o.tar"))
    out.add(RawSample("k1", [("k1.png", "png", b"P"), ("k1.json", "json", json.dumps(failed).encode())]),
            {"ssc": "s", "dsc": "d"})
    out.close()
    assert json.loads(dict(_members(tmp_path / "o.tar"))["k1.json"]) == \
        {"caption": "a", "orig_dsc": "truth", "ssc": "s", "dsc": "d"}


def test_sidecar_is_joined_into_samples_by_the_data_layer(tmp_path):
    shard = tmp_path / "in" / "00007.tar"
    shard.parent.mkdir()
    keys = write_shard(shard, 7, 6, size=32, bad={3: "empty"}, txt_captions=True)
    captioned, failed, absent = keys[:3], keys[3], keys[4]  # keys[3] is sample 4: the job refused its image
    side = tmp_path / "side"
    side.mkdir()
    out = SidecarOutput(str(side / sidecar_name(str(shard))))
    for i, key in enumerate(captioned):
        out.add(RawSample(key), {"ssc": f"gen s {i}", "dsc": f"gen d {i}"})
    out.add(RawSample(sample_key(7, 3), error=("empty_image", "")), None)
    out.add(RawSample(failed, error=("too_large", "")), None)
    out.close()
    assert read_sidecar(out.path)[sample_key(7, 3)] == {"key": sample_key(7, 3), "recaption": "failed",
                                                        "error": "empty_image"}
    caption = CaptionConfig(source="dsc")
    samples = list(build_pipeline([str(shard)], image_size=32, sidecar_dir=str(side), caption=caption))
    assert [(s["key"], s["ssc"], s["dsc"]) for s in samples] == \
        [(k, f"gen s {i}", f"gen d {i}") for i, k in enumerate(captioned)] + [(failed, "", ""), (absent, "", "")]
    # neither the shard's JSON ground truth nor its own .dsc.txt trains as the captioners' caption
    assert [(s["caption"], s["caption_kind"], s["caption_fallback"]) for s in samples[3:]] == \
        [(f"alt {failed}", "alt", True), (f"alt {absent}", "alt", True)]
    assert not any(s["caption_fallback"] for s in samples[:3])
    plain = list(build_pipeline([str(shard)], image_size=32, sidecar_dir=str(tmp_path / "none")))
    assert [s["dsc"] for s in plain] == [f"txt dsc {k}" for k in keys]  # no sidecar: the shard's own captions


def test_mark_failed_json_keeps_the_ground_truth_aside():
    marked = json.loads(mark_failed_json(json.dumps({"ssc": "s", "dsc": "", "orig_ssc": "older"}).encode(), "x"))
    assert marked == {"orig_ssc": "older", "recaption": "failed", "recaption_error": "x"}
    assert mark_failed_json(b"[1]", "x") is None and mark_failed_json(b"{cut", "x") is None


def test_reader_records_every_kind_of_bad_sample(tmp_path):
    kinds = {1: "truncated", 2: "empty", 3: "no_image", 4: "huge"}
    shard = tmp_path / "00009.tar"
    marker = tmp_path / "pwned"
    write_shard(shard, 9, 7, size=32, bad=kinds,
                extra_members={5: {"png": b"plain text, not an image"}, 6: {"pyd": malicious_pickle(marker)}})
    items = list(RecaptionSource([str(shard)], image_size=32, batch_size=4))
    end = items[-1]
    assert isinstance(end, ShardEnd) and end.error is None and end.input_samples == 7
    samples = [s for item in items[:-1] for s in item.samples]
    assert [s.key for s in samples] == [sample_key(9, i) for i in range(7)]
    reasons = {s.key: s.error[0] for s in samples if s.error}
    expected = {sample_key(9, i): BAD_REASON[k] for i, k in kinds.items()} | {sample_key(9, 5): "bad_image"}
    assert reasons == expected
    assert sum(item.images.shape[0] for item in items[:-1] if item.images is not None) == 2
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["not_a_tar", "truncated", "empty_file"])
def test_an_unreadable_shard_ends_with_an_error(tmp_path, damage):
    shard = tmp_path / "00001.tar"
    write_shard(shard, 1, 6, size=32)
    data = shard.read_bytes()
    shard.write_bytes({"not_a_tar": b"hello, I am not a tar" * 50, "truncated": data[: len(data) // 2],
                       "empty_file": b""}[damage])
    end = list(RecaptionSource([str(shard)], image_size=32, batch_size=4))[-1]
    assert isinstance(end, ShardEnd) and end.error, end
    with pytest.raises(Exception):
        list(read_raw_samples(str(shard), {}))


def test_a_worker_passes_on_shards_it_could_not_claim(tmp_path):
    shard = tmp_path / "00000.tar"
    write_shard(shard, 0, 3, size=32)
    states = iter(["busy", "done"])
    items = list(RecaptionSource([str(shard), str(shard)], 32, 4, claim=lambda s: next(states)))
    assert [(type(i).__name__, i.state) for i in items] == [("ShardSkip", "busy"), ("ShardSkip", "done")]


def test_merged_summary_adds_ranks_and_measures_the_span():
    ranks = [{"rank": r, "world_size": 2, "task_id": 0, "task_count": 1, "assigned": 2, "done": 2 - r, "skipped": r,
              "input_samples": 10, "output_samples": 10, "captioned": 9, "failed": {"bad_image": 1},
              "failed_shards": [{"shard": "x", "error": "e"}] if r else [], "started": 100.0 + r,
              "finished": 110.0 + 2 * r, "images_per_s": 9 / (10 + r)} for r in range(2)]
    merged = merge(ranks, total_shards=4, completed=4)
    assert merged["complete"] and merged["ranks_reported"] == merged["ranks_expected"] == 2
    assert (merged["shards_done"], merged["shards_skipped"], merged["samples_captioned"]) == (3, 1, 18)
    assert merged["samples_failed"] == {"bad_image": 2} and merged["shards_failed"] == [{"shard": "x", "error": "e"}]
    assert merged["wall_s"] == 12.0 and merged["images_per_s"] == 1.5
    assert set(merged["images_per_s_per_rank"]) == {"task0-rank0", "task0-rank1"}


def test_merged_summary_reports_the_slowest_startup_and_the_summed_steady_rate():
    base = {"world_size": 2, "task_id": 0, "task_count": 1, "assigned": 1, "done": 1, "skipped": 0,
            "input_samples": 4, "output_samples": 4, "captioned": 4, "failed": {}, "failed_shards": [],
            "started": 0.0, "finished": 10.0, "images_per_s": 0.4}
    ranks = [dict(base, rank=0, startup_s=2.5, steady_images_per_s=100.0),
             dict(base, rank=1, startup_s=4.0, steady_images_per_s=90.5)]
    merged = merge(ranks, total_shards=2, completed=2)
    assert merged["startup_s"] == 4.0 and merged["steady_images_per_s"] == 190.5
    idle = merge([dict(base, rank=r, startup_s=None, steady_images_per_s=None) for r in range(2)], 2, 2)
    assert idle["startup_s"] is None and idle["steady_images_per_s"] is None


def _export(folder: Path) -> str:
    folder.mkdir(parents=True)
    (folder / "captioner.json").write_text("{}")
    return str(folder)


def test_config_composes_and_bad_values_fail_with_one_line(tmp_path):
    shards = tmp_path / "in"
    shards.mkdir()
    write_shard(shards / "00000.tar", 0, 2, size=32)
    base = [f"recaption.input_shards={shards}", f"recaption.ssc={_export(tmp_path / 's')}",
            f"recaption.dsc={_export(tmp_path / 'd')}", f"recaption.out_dir={tmp_path / 'out'}", "stage=recaption"]
    assert check_config(compose(base)) == [str(shards / "00000.tar")]
    again = tmp_path / "in2"  # the same shard name in another folder: fine for new shards, not for sidecars
    again.mkdir()
    write_shard(again / "00000.tar", 1, 2, size=32)
    assert len(check_config(compose(base[1:] + [f"recaption.input_shards='{shards},{again}'"]))) == 2
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{shards}/00000.tar\n{shards}/00007.tar\n")
    assert compose(["stage=ldm"]).recaption.out_dir == compose(["stage=recaption"]).recaption.out_dir
    for extra, words in [(["recaption.mode=copy"], "recaption.mode"),
                         ([f"recaption.dsc={tmp_path / 'nothing'}"], "recaption.dsc"),
                         (["recaption.ssc=null", "recaption.dsc=null"], "both null"),
                         ([f"recaption.out_dir={shards}"], "would overwrite"),
                         (["recaption.batch_size=0"], "recaption.batch_size"),
                         (["recaption.lease_timeout_s=0"], "recaption.lease_timeout_s"),
                         ([f"recaption.input_shards={listing}"], "named in the list file"),
                         ([f"recaption.input_shards='{shards},{again}'", "recaption.mode=sidecar"],
                          "sidecars are found by the shard's base name")]:
        with pytest.raises(ConfigError) as err:
            check_config(compose(base + extra))
        assert words in str(err.value) and "\n" not in str(err.value)
    check_config(compose(base + [f"recaption.out_dir={shards}", "recaption.mode=sidecar"]))  # allowed
