"""The shared per-shard offline job (dalle3/data/offline.py): split, atomic outputs, resume."""
from __future__ import annotations

import os

import pytest

from dalle3.data.offline import completed, run_shard_job
from dalle3.dist.env import ArrayTask, DistEnv


def _shards(tmp_path, n):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        p = src / f"{i:05d}.tar"
        p.write_text(f"shard {i}")
        paths.append(str(p))
    return paths


def _copy(src: str, dst: str) -> dict:
    with open(src) as f, open(dst, "w") as g:
        g.write(f.read().upper())
    return {"samples": 1}


@pytest.mark.parametrize("world, tasks", [(1, 1), (2, 1), (2, 4)])
def test_every_shard_is_done_exactly_once_over_any_layout(tmp_path, world, tasks):
    shards = _shards(tmp_path, 11)
    out = tmp_path / "out"
    seen = []

    def work(src, dst):
        seen.append(src)
        return _copy(src, dst)

    results = [run_shard_job(shards, str(out), work, env=DistEnv(rank=r, world_size=world),
                             task=ArrayTask(t, tasks)) for t in range(tasks) for r in range(world)]
    assert sorted(seen) == shards  # disjoint and covering
    assert sum(r["done"] for r in results) == 11 and sum(r["samples"] for r in results) == 11
    assert sorted(os.listdir(out / "_manifest")) == [f"{i:05d}.tar.json" for i in range(11)]
    assert (out / "00003.tar").read_text() == "SHARD 3"


def test_a_crashed_job_leaves_no_partial_output_and_a_rerun_does_only_the_rest(tmp_path):
    shards = _shards(tmp_path, 4)
    out = str(tmp_path / "out")
    calls = []

    def flaky(src, dst):
        calls.append(os.path.basename(src))
        if len(calls) == 3:
            with open(dst, "w") as f:
                f.write("half a shard")
            raise RuntimeError("preempted")
        return _copy(src, dst)

    with pytest.raises(RuntimeError):
        run_shard_job(shards, out, flaky, env=DistEnv())
    assert sorted(completed(out)) == ["00000.tar", "00001.tar"]
    assert not os.path.exists(os.path.join(out, "00002.tar"))  # only the tmp file, never the final name
    calls.clear()
    again = run_shard_job(shards, out, _copy_logged(calls), env=DistEnv())
    assert calls == ["00002.tar", "00003.tar"] and again["skipped"] == 2 and again["done"] == 2
    third = run_shard_job(shards, out, _copy_logged(calls), env=DistEnv())
    assert third["done"] == 0 and third["skipped"] == 4


def _copy_logged(calls):
    def work(src, dst):
        calls.append(os.path.basename(src))
        return _copy(src, dst)
    return work


def test_output_deleted_after_completion_is_redone(tmp_path):
    shards = _shards(tmp_path, 2)
    out = str(tmp_path / "out")
    run_shard_job(shards, out, _copy, env=DistEnv())
    os.remove(os.path.join(out, "00001.tar"))
    assert run_shard_job(shards, out, _copy, env=DistEnv())["done"] == 1


def test_colliding_output_names_are_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "0.tar").write_text("x"), (b / "0.tar").write_text("y")
    with pytest.raises(ValueError, match="base name"):
        run_shard_job([str(a / "0.tar"), str(b / "0.tar")], str(tmp_path / "out"), _copy, env=DistEnv())
