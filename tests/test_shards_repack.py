"""``maskahand shards repack``: every sample exactly once, byte for byte, mixed across videos, size-targeted,
byte-stable for a seed; resumes after a real SIGKILL without losing or duplicating work; refuses changed
inputs or settings; skips an unreadable input shard and says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from maskahand.core.config import RepackConfig, ShardWriterConfig
from maskahand.core.configbase import ConfigError
from maskahand.shards.reader import list_shards, maskahand_dataset
from maskahand.shards.repack import RepackError, parse_size, repack

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
from benchmarks.mixing import tiny_sample, write_video_collection  # noqa: E402


def members(folder: Path) -> dict[str, bytes]:
    """Every tar member of every shard in ``folder``: name -> bytes (a duplicate name fails)."""
    out: dict[str, bytes] = {}
    for url in list_shards(folder):
        with tarfile.open(url) as tar:
            for m in tar:
                assert m.name not in out, f"{m.name} twice"
                f = tar.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
    return out


def shard_keys(url: str) -> list[str]:
    return json.loads(Path(url + ".json").read_text())["keys"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    # 4 videos x 15 clips, each video in shards of 10 (as mine writes: a new shard per video)
    return write_video_collection(tmp_path_factory.mktemp("col"), 4, 15, ShardWriterConfig(max_samples=10))


def test_repack_keeps_every_sample_once_byte_for_byte_mixes_videos_and_is_stable(collection, tmp_path):
    sample_bytes = sum(len(v) for v in members(collection).values()) // 60
    target = 12 * (sample_bytes + 5 * 512)  # ~10 samples a shard
    cfg = RepackConfig(target_size=target, seed=3)
    summary = repack(collection, tmp_path / "a", cfg, progress=False)
    assert members(tmp_path / "a") == members(collection)  # all 60 samples, every member's bytes unchanged
    urls = list_shards(tmp_path / "a")
    assert 4 <= len(urls) <= 10 and summary["samples"] == 60 and len(summary["shards"]) == len(urls)
    assert all(os.path.getsize(u) <= target for u in urls)
    videos = [{k.split("_")[0] for k in shard_keys(u)} for u in urls]
    assert sum(len(v) >= 3 for v in videos) >= len(urls) - 1  # each shard draws from the whole collection
    # the repacked shards are sound, and the reader decodes them like the originals
    check = subprocess.run(
        [sys.executable, "-m", "maskahand.cli", "shards", "check", str(tmp_path / "a"), "--quiet"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(s.key for s in maskahand_dataset(tmp_path / "a")) == sorted(
        s.key for s in maskahand_dataset(collection)
    )
    # byte-stable for a seed; another seed shuffles differently
    repack(collection, tmp_path / "b", cfg, progress=False)
    assert [s["sha256"] for s in summary["shards"]] == [
        s["sha256"] for s in json.loads((tmp_path / "b" / "repack.json").read_text())["shards"]
    ]
    other = repack(collection, tmp_path / "c", RepackConfig(target_size=target, seed=4), progress=False)
    assert [s["sha256"] for s in other["shards"]] != [s["sha256"] for s in summary["shards"]]


@pytest.mark.slow
def test_repack_killed_mid_way_resumes_to_the_same_shards_without_rewriting_finished_ones(tmp_path):
    src = write_video_collection(tmp_path / "src", 3, 60, ShardWriterConfig(max_samples=30))
    cmd = [
        sys.executable,
        "-m",
        "maskahand.cli",
        "shards",
        "repack",
        str(src),
        "--target-size",
        "1",
        "--quiet",
    ]
    straight = subprocess.run([*cmd, "--out", str(tmp_path / "straight")], capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    run = tmp_path / "run"
    proc = subprocess.Popen([*cmd, "--out", str(run)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(list(run.glob("*.tar.json"))) < 20:  # one sample a shard: 180 shards, each fsynced
        assert proc.poll() is None and time.time() < deadline, "repack ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "repack.json").exists()
    finished = sorted(run.glob("*.tar.json"))
    assert 20 <= len(finished) < 180
    # what a kill leaves is never a readable half-shard: every *.tar is complete (its members all there)
    for url in list_shards(run):
        with tarfile.open(url) as tar:
            assert len(tar.getnames()) == 5  # 2 frames, target, heatmap, meta
    mtimes = {p.name: p.stat().st_mtime_ns for p in finished}
    resumed = subprocess.run([*cmd, "--out", str(run)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in finished} == mtimes  # finished shards kept, not rewritten
    a = json.loads((tmp_path / "straight" / "repack.json").read_text())
    b = json.loads((run / "repack.json").read_text())
    assert a["shards"] == b["shards"] and b["samples"] == 180
    assert not list(run.glob("*.partial"))
    assert members(run) == members(src)


def test_repack_refuses_other_inputs_or_settings_in_a_used_folder(collection, tmp_path):
    out = tmp_path / "out"
    repack(collection, out, RepackConfig(target_size=10**9), progress=False)
    with pytest.raises(ConfigError, match="seed"):
        repack(collection, out, RepackConfig(target_size=10**9, seed=1), progress=False)
    grown = tmp_path / "grown"
    grown.mkdir()
    for p in collection.glob("*"):
        (grown / p.name).symlink_to(p)
    from maskahand.shards.writer import ShardWriter

    with ShardWriter(grown, "zother", kind="maskahand") as w:
        w.write(tiny_sample("other.mp4", 0))
    repack(grown, tmp_path / "out2", RepackConfig(target_size=10**9), progress=False)
    with pytest.raises(ConfigError, match="inputs"):
        repack(grown, out, RepackConfig(target_size=10**9), progress=False)


def test_repack_skips_an_unreadable_shard_and_names_it_and_refuses_mixed_kinds(collection, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    urls = list_shards(collection)
    for u in urls[:2]:
        (bad / Path(u).name).write_bytes(Path(u).read_bytes())
    cut = Path(urls[2]).read_bytes()
    (bad / Path(urls[2]).name).write_bytes(cut[: len(cut) // 2 + 100])  # truncated mid-member
    summary = repack(bad, tmp_path / "out", RepackConfig(), progress=False)
    assert [Path(s["shard"]).name for s in summary["skipped"]] == [Path(urls[2]).name], (
        summary,
        urls,
        len(cut),
    )
    assert summary["samples"] == 15  # the two sound shards (10 + 5 clips of video 0)
    from test_pretrain_support import write_clip_shards

    clips = write_clip_shards(tmp_path / "clips", 6, per_shard=2)  # clip shards repack as well
    done = repack(clips, tmp_path / "clips_out", RepackConfig(target_size=10**9), progress=False)
    assert done["schema"] == "maskahand.clip/1" and done["samples"] == 6 and len(done["shards"]) == 1
    assert members(tmp_path / "clips_out") == members(clips)
    write_clip_shards(bad, 2, per_shard=2)  # clip shards beside MaskAHand ones
    with pytest.raises(RepackError, match="two kinds"):
        repack(bad, tmp_path / "out3", RepackConfig(), progress=False)


def test_repack_refuses_a_key_in_two_shards(tmp_path):
    from maskahand.shards.writer import ShardWriter

    for name in ("a", "b"):
        with ShardWriter(tmp_path / "in", name, kind="maskahand") as w:
            w.write(tiny_sample("same.mp4", 0))
    with pytest.raises(RepackError, match="in both"):
        repack(tmp_path / "in", tmp_path / "out", RepackConfig(), progress=False)


@pytest.mark.parametrize(
    ("text", "size"),
    [("1GB", 10**9), ("512MB", 512 * 10**6), ("1.5G", 1_500_000_000), ("1GiB", 2**30), ("300", 300)],
)
def test_target_sizes_parse(text, size):
    assert parse_size(text) == size


def test_a_bad_target_size_is_a_usage_error(collection, tmp_path, capsys):
    from maskahand.cli import main

    argv = ["shards", "repack", str(collection), "--out", str(tmp_path / "o"), "--target-size", "big"]
    assert main(argv) == 2
    assert "--target-size" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
