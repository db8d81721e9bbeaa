"""Shard specs expand to the right files, and shard assignment is disjoint and covering."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from dalle3.config.validate import ConfigError
from dalle3.data.shards import validate_shards
from dalle3.data.shards import assign_shards, expand_shards, split_top_level


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    for i in range(5):
        (tmp_path / f"shard-{i:03d}.tar").write_bytes(b"")
    (tmp_path / "notes.md").write_text("not a shard")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep-000.tar").write_bytes(b"")
    return tmp_path


def names(paths: list[str]) -> list[str]:
    return [os.path.basename(p) for p in paths]


def test_single_tar_path(shard_dir):
    assert expand_shards(str(shard_dir / "shard-002.tar")) == [str(shard_dir / "shard-002.tar")]


def test_folder_gives_its_tars_sorted_and_not_recursive(shard_dir):
    assert names(expand_shards(str(shard_dir))) == [f"shard-{i:03d}.tar" for i in range(5)]


def test_glob(shard_dir):
    assert names(expand_shards(str(shard_dir / "shard-00[13].tar"))) == ["shard-001.tar", "shard-003.tar"]
    assert names(expand_shards(str(shard_dir / "*" / "*.tar"))) == ["deep-000.tar"]


def test_brace_pattern(shard_dir):
    assert names(expand_shards(str(shard_dir / "shard-{001..003}.tar"))) == [
        "shard-001.tar", "shard-002.tar", "shard-003.tar"]


def test_list_file_with_comments_relative_paths_and_nesting(shard_dir):
    (shard_dir / "more.list").write_text("shard-004.tar\n")
    (shard_dir / "train.txt").write_text(
        "# training shards\n\nshard-000.tar\n" f"{shard_dir / 'shard-002.tar'}\n" "  # indented comment\n"
        "pipe:cat /remote/x.tar\nmore.list\n")
    assert expand_shards(str(shard_dir / "train.txt")) == [
        str(shard_dir / "shard-000.tar"), str(shard_dir / "shard-002.tar"), "pipe:cat /remote/x.tar",
        str(shard_dir / "shard-004.tar")]


def test_pipe_urls_are_returned_as_is():
    spec = "pipe:aws s3 cp s3://bucket/shard-{000..002}.tar -"
    assert expand_shards(spec) == [spec]


def test_comma_separated_mix_keeps_order_and_drops_duplicates(shard_dir):
    spec = (f"{shard_dir / 'shard-{003,004}.tar'}, {shard_dir / 'shard-000.tar'},pipe:cat a.tar,"
            f"{shard_dir / 'shard-00[03].tar'}")
    assert split_top_level(spec)[0].endswith("shard-{003,004}.tar")  # the brace's comma is not a separator
    out = expand_shards(spec)
    assert names(out[:3]) == ["shard-003.tar", "shard-004.tar", "shard-000.tar"]
    assert out[3:] == ["pipe:cat a.tar"]


def test_a_list_of_specs_is_accepted(shard_dir):
    assert names(expand_shards([str(shard_dir / "shard-001.tar"), str(shard_dir / "sub")])) == [
        "shard-001.tar", "deep-000.tar"]


@pytest.mark.parametrize("spec", ["missing.tar", "missing-dir", "shard-{007..008}.tar", "missing-*.tar",
                                  "shard-000.tar,missing.txt"])
def test_missing_paths_raise_file_not_found_naming_them(shard_dir, spec):
    spec = ",".join(str(shard_dir / part) for part in spec.split(","))
    with pytest.raises(FileNotFoundError, match="missing|007"):
        expand_shards(spec)


def test_missing_entry_in_list_file_is_named(shard_dir):
    (shard_dir / "bad.txt").write_text("shard-000.tar\nnot-there.tar\n")
    with pytest.raises(FileNotFoundError, match="not-there.tar"):
        expand_shards(str(shard_dir / "bad.txt"))


def test_validate_shards_turns_errors_into_one_line_config_errors(shard_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"data.train_shards=.*missing.tar") as err:
        validate_shards("data.train_shards", str(shard_dir / "missing.tar"))
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="matches no shards"):
        validate_shards("data.val_shards", str(tmp_path / "empty"))


# -- assignment -------------------------------------------------------------
LAYOUTS = [(1, 1), (1, 2), (2, 4)]  # (nodes, devices per node): 1, 2 and 2 nodes x 4 ranks


@pytest.mark.parametrize("nodes, devices", LAYOUTS)
@pytest.mark.parametrize("task_count", [1, 3])
@pytest.mark.parametrize("n_shards", [0, 1, 5, 8, 17, 100])
def test_assignment_is_disjoint_covering_and_balanced(nodes, devices, task_count, n_shards):
    shards = [f"s{i:03d}.tar" for i in range(n_shards)]
    world = nodes * devices
    parts = [assign_shards(shards, rank, world, task, task_count)
             for task in range(task_count) for rank in range(world)]
    flat = [s for part in parts for s in part]
    assert sorted(flat) == shards  # covering, and no shard twice (disjoint)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_assignment_rule_is_the_documented_stride():
    shards = [f"s{i}" for i in range(10)]
    assert assign_shards(shards, 1, 2) == ["s1", "s3", "s5", "s7", "s9"]
    # reader = task_id * world_size + rank = 1 * 2 + 1 = 3 of 4 readers
    assert assign_shards(shards, 1, 2, task_id=1, task_count=2) == ["s3", "s7"]


def test_assignment_is_pure():
    shards = [f"s{i}" for i in range(9)]
    assert assign_shards(shards, 2, 4) == assign_shards(list(shards), 2, 4)
    assert shards == [f"s{i}" for i in range(9)]


@pytest.mark.parametrize("rank, world, task, count", [(2, 2, 0, 1), (-1, 2, 0, 1), (0, 0, 0, 1), (0, 2, 3, 3)])
def test_assignment_rejects_impossible_places(rank, world, task, count):
    with pytest.raises(ValueError):
        assign_shards(["a.tar"], rank, world, task, count)
