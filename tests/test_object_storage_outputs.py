"""Outputs on object storage (a real S3-compatible server, moto, on 127.0.0.1): the mining ledger without
append, cleaning and the manifest on a bucket, mining and synthesis into a bucket byte for byte as on disk,
readers over ``s3://`` shards, a missing bucket, no credentials in anything written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from maskahand.core import storage
from maskahand.mine.ledger import (
    LEDGER,
    LEDGER_ENTRIES,
    MANIFEST,
    Ledger,
    VideoRecord,
    clean_unclaimed,
    rebuild_manifest,
    video_stem,
)


def objects(prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix``: relative name -> bytes."""
    names = list(storage.walk_files(prefix))
    got = storage.read_many(names)
    return {n[len(prefix) :].lstrip("/"): got[n] for n in names}


def local_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def upload_folder(folder: Path, prefix: str) -> None:
    for name, _ in local_files(folder).items():
        storage.upload_file(folder / name, storage.join(prefix, name))


def ok(video: str, shards: int = 1, **kw) -> VideoRecord:
    stem = video_stem(video)
    return VideoRecord(
        video, f"/v/{video}", "ok", shards=[f"{stem}-{k:06d}.tar" for k in range(shards)], **kw
    )


def test_bucket_ledger_folds_entries_last_record_wins_and_a_kill_mid_compaction_changes_nothing(s3_bucket):
    out = f"{s3_bucket}/clips"
    ledger = Ledger(out)
    ledger.append(VideoRecord("a.mp4", "/v/a.mp4", "failed", "TruncatedVideoError: a", finished_at=1.0))
    ledger.append(ok("b.mp4", clips=2, finished_at=2.0))
    assert ledger.compact() == 2
    assert not storage.listdir(storage.join(out, LEDGER_ENTRIES))  # folded into ledger.jsonl
    # the next run: a is mined again and now ok; its entry must win over the folded "failed" line
    again = Ledger(out)
    assert again.status("a.mp4") == "failed" and again.records["b.mp4"].clips == 2
    again.append(ok("a.mp4", clips=3, finished_at=3.0))
    entries = objects(storage.join(out, LEDGER_ENTRIES))
    assert list(entries) == [f"{video_stem('a.mp4')}.json"]  # one small object per finished video
    fresh = Ledger(out)
    assert fresh.status("a.mp4") == "ok" and fresh.records["a.mp4"].clips == 3
    # killed after uploading the folded ledger but before deleting the entries: put them back
    fresh.compact()
    for name, data in entries.items():
        storage.put_bytes(storage.join(out, LEDGER_ENTRIES, name), data)
    after_kill = Ledger(out)
    assert {v: after_kill.records[v].status for v in after_kill.records} == {"a.mp4": "ok", "b.mp4": "ok"}
    assert after_kill.records["a.mp4"].clips == 3 and len(after_kill) == 2
    after_kill.compact()
    lines = storage.read_bytes(storage.join(out, LEDGER)).decode().splitlines()
    assert all(json.loads(line)["video_id"] in {"a.mp4", "b.mp4"} for line in lines)
    final = Ledger(out)
    assert final.status("a.mp4") == "ok" and final.records["a.mp4"].clips == 3
    assert not storage.listdir(storage.join(out, LEDGER_ENTRIES))


def put_video_files(out: str, video: str, shards: int) -> list[str]:
    stem = video_stem(video)
    names = [f"shards/{stem}-{k:06d}.tar{ext}" for k in range(shards) for ext in ("", ".json")]
    names += [f"parts/{stem}.jsonl", f"parts/{stem}.frames.jsonl"]
    for name in names:
        body = (
            json.dumps({"video_id": video, "start": 0, "key": stem}) + "\n"
            if name.endswith(".jsonl")
            else b"x"
        )
        storage.put_bytes(storage.join(out, name), body.encode() if isinstance(body, str) else body)
    return [storage.join(out, n) for n in names]


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_clean_and_manifest_on_a_bucket_as_on_disk(where, s3_bucket, tmp_path):
    out = f"{s3_bucket}/clips" if where == "bucket" else str(tmp_path / "clips")
    ledger = Ledger(out)
    done = put_video_files(out, "done.mp4", 2)
    ledger.append(ok("done.mp4", 2, clips=1))
    redo = put_video_files(out, "changed.mp4", 1)
    ledger.append(ok("changed.mp4", 1, clips=1))
    orphan = put_video_files(out, "killed.mp4", 1)  # published, killed before its ledger line
    # a resume probes only the videos it redoes: the changed one goes, the finished one stays
    removed = clean_unclaimed(out, ledger, redo={video_stem("changed.mp4")}, only_redo=True)
    assert sorted(removed) == sorted(redo)
    assert all(storage.exists(f) for f in done + orphan)
    # a full clean (every unclaimed file) removes the killed video's files too
    assert sorted(clean_unclaimed(out, ledger)) == sorted(orphan)
    assert all(storage.exists(f) for f in done)

    ledger.compact()
    assert rebuild_manifest(out, ledger) == 1  # changed.mp4's part is gone: only done.mp4's row
    manifest = storage.join(out, MANIFEST)
    assert json.loads(storage.read_bytes(manifest))["video_id"] == "done.mp4"
    storage.put_bytes(manifest, b"edited\n")
    assert rebuild_manifest(out, Ledger(out)) == 1  # ledger unchanged: not rebuilt
    assert storage.read_bytes(manifest) == b"edited\n"
    more = Ledger(out)
    put_video_files(out, "new.mp4", 1)
    more.append(ok("new.mp4", 1, clips=1))
    more.compact()
    assert rebuild_manifest(out, more) == 2  # the ledger changed: rebuilt
    assert [json.loads(r)["video_id"] for r in storage.read_bytes(manifest).splitlines()] == [
        "done.mp4",
        "new.mp4",
    ]


def test_a_missing_bucket_fails_at_once_in_one_line(s3_server, shared_data, tmp_path):
    cmd = [sys.executable, "-m", "maskahand.cli", "mine", "--out", "s3://no-such-bucket-18/clips"]
    cmd += ["--videos", str(shared_data / "videos" / "ego4d_stirring.mp4"), "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if "maskahand mine:" in line]
    assert lines == [
        "maskahand mine: s3://no-such-bucket-18/clips: the bucket 'no-such-bucket-18' does not exist (create it first)"
    ]
    assert "Traceback" not in r.stderr


def secrets_in(blobs: dict[str, bytes], endpoint: str) -> list[str]:
    """Names of objects that hold the test credentials or the endpoint."""
    from tests.conftest import S3_ENV

    words = [S3_ENV["AWS_SECRET_ACCESS_KEY"], S3_ENV["AWS_ACCESS_KEY_ID"], endpoint.split("//")[1]]
    return [name for name, data in blobs.items() for w in words if w.encode() in data]


@pytest.mark.ray
@pytest.mark.slow
def test_mining_into_a_bucket_gives_the_local_bytes_and_readers_take_the_url(
    mined_clip_shards, s3_bucket, s3_server
):
    """Same videos and recipe as the session's local ``mined_clip_shards``, mined into ``s3://``: every
    shard, manifest, part and the clip manifest are byte-identical; the Ray workers (started before the
    S3 variables were set) get them from the driver; readers and ``shards check`` take the URL."""
    from maskahand.core.config import MineRecipe
    from maskahand.core.configbase import apply_overrides
    from maskahand.core.fsutil import read_jsonl
    from maskahand.mine.pipeline import mine
    from maskahand.shards.check import check_shards
    from maskahand.shards.reader import clip_dataset

    reference = mined_clip_shards
    videos = {Path(r["path"]).parent for r in read_jsonl(reference / "ledger.jsonl")}.pop()
    out = f"{s3_bucket}/clips"
    recipe = apply_overrides(MineRecipe(), ["detector.backend=mediapipe", "mine.frame_max_side=256"])
    recipe.storage.options = {"s3": {"config_kwargs": {"connect_timeout": 30}}}  # runtime, never saved
    summary = mine(recipe, str(videos), out, progress=False)
    assert summary["videos_ok"] == 4
    got = objects(out)
    expected = {
        k: v
        for k, v in local_files(reference).items()
        if k.split("/")[0] in ("shards", "parts") or k == MANIFEST
    }
    assert {k: got.get(k) for k in expected} == expected
    assert not [k for k in got if k.startswith(LEDGER_ENTRIES)]  # folded at the end of the run
    assert secrets_in(got, s3_server) == []
    assert b"config_kwargs" not in got["config.yaml"]
    # a reader streams the bucket's shards: same samples, same order as the local shards
    keys = [s.key for s in clip_dataset(out, split_by_node=False, split_by_worker=False, on_error="raise")]
    local = [
        s.key for s in clip_dataset(reference, split_by_node=False, split_by_worker=False, on_error="raise")
    ]
    assert keys == local and len(keys) > 0
    report = check_shards(out, progress=False)
    assert report.ok and len(report.shards) == len(list((reference / "shards").glob("*.tar")))
    # the same command again: nothing to do, nothing rewritten
    again = mine(recipe, str(videos), out, progress=False)
    assert again["nothing_to_do"] and objects(out)[MANIFEST] == got[MANIFEST]


@pytest.mark.ray
def test_synth_from_and_to_a_bucket_equals_the_local_run_byte_for_byte(s3_bucket, tmp_path, ray_session):
    from maskahand.core.config import ShardWriterConfig
    from maskahand.shards.writer import ShardWriter
    from maskahand.synth.pipeline import run_synth
    from tests.test_synth_pipeline import clip_sample, small_recipe

    clips = tmp_path / "clips"
    hands = [
        {1: [[10.0, 10.0, 30.0, 35.0]]},
        {},
        {2: [[40.0, 30.0, 70.0, 55.0]]},
        {0: [[5.0, 5.0, 20.0, 25.0]]},
    ]
    with ShardWriter(clips, "clips", ShardWriterConfig(max_samples=2), kind="clip") as writer:
        for i, h in enumerate(hands):
            writer.write(clip_sample(f"c{i}", i, h))
    upload_folder(clips, f"{s3_bucket}/clips")
    recipe = small_recipe(variants=2)
    local = run_synth(clips, tmp_path / "synth", recipe, progress=False)
    remote = run_synth(f"{s3_bucket}/clips", f"{s3_bucket}/synth", recipe, progress=False)
    assert remote["written"] == local["written"] == 3
    want = {k: v for k, v in local_files(tmp_path / "synth").items() if ".tar" in k}
    got = objects(f"{s3_bucket}/synth")
    assert {k: got.get(k) for k in want} == want and len(want) == 4  # two tars, two manifests
    # resumed from the bucket's ledger and manifests: nothing redone
    again = run_synth(f"{s3_bucket}/clips", f"{s3_bucket}/synth", recipe, progress=False)
    assert again["resumed"] == 2 and again["processed"] == 0


def test_readers_and_shards_check_take_bucket_urls(s3_bucket, tmp_path):
    import torch

    from maskahand.core.config import ShardWriterConfig
    from maskahand.shards.check import check_shards
    from maskahand.shards.reader import clip_dataset, list_shards
    from maskahand.shards.writer import ShardWriter
    from maskahand.synth.clipio import read_clip_shard
    from tests.test_synth_pipeline import clip_sample

    local = tmp_path / "out" / "shards"
    with ShardWriter(local, "clips", ShardWriterConfig(max_samples=2), kind="clip") as writer:
        for i in range(3):
            writer.write(clip_sample(f"c{i}", i, {1: [[10.0, 10.0, 30.0, 35.0]]}))
    out = f"{s3_bucket}/out"
    upload_folder(tmp_path / "out", out)
    tars = [f"{out}/shards/clips-000000.tar", f"{out}/shards/clips-000001.tar"]
    assert list_shards(out) == tars  # a mine-style output: its shards/ folder
    assert list_shards(f"{out}/shards/*.tar") == tars
    assert list_shards(f"{out}/shards/clips-{{000000..000001}}.tar") == tars
    with pytest.raises(storage.ObjectNotFoundError, match="missing"):
        list_shards(f"{s3_bucket}/missing")

    def read(where):
        return list(clip_dataset(where, split_by_node=False, split_by_worker=False, on_error="raise"))

    remote, here = read(out), read(local)
    assert [s.key for s in remote] == [s.key for s in here] == ["c0", "c1", "c2"]
    assert all(torch.equal(a.frames, b.frames) and a.meta == b.meta for a, b in zip(remote, here))
    assert [s.key for s in read_clip_shard(tars[1], torch.device("cpu"))] == ["c2"]
    assert check_shards(out, progress=False).ok
    # a damaged object is found: its bytes no longer match the manifest
    storage.put_bytes(tars[1], storage.read_bytes(tars[1])[:-1024])
    report = check_shards(out, progress=False)
    assert not report.ok and all(p.startswith("clips-000001.tar: ") for p in report.problems)
