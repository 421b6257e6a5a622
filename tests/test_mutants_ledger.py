"""Ledger behaviour that ``make mutate`` found unpinned (mutants of mine/ledger.py that survived).

Expected values are written out by hand (or computed with hashlib / the file system directly).
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from maskahand.mine.ledger import (
    Ledger,
    VideoRecord,
    clean_unclaimed,
    discard_video,
    fingerprint,
    publish_video,
    rebuild_manifest,
    summarize,
    video_stem,
    write_summary,
)


def test_video_stem_is_the_first_16_hex_digits_of_the_ids_sha1():
    for video_id in ("a.mp4", "sub/dir/clip.MKV", "ünïcode/видео.mp4"):
        assert video_stem(video_id) == hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:16]
    assert len(video_stem("x")) == 16 and "." not in video_stem("x.mp4")


def test_fingerprint_of_a_file_and_of_a_frame_folder(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"12345")
    os.utime(video, ns=(1_000_000_000, 2_000_000_007))
    assert fingerprint(video) == {"size": 5, "mtime_ns": 2_000_000_007}
    folder = tmp_path / "frames"
    (folder / "nested").mkdir(parents=True)
    (folder / "frame_0000000001.jpg").write_bytes(b"abc")
    (folder / "frame_0000000002.jpg").write_bytes(b"defg")
    (folder / "nested" / "ignored.jpg").write_bytes(b"not counted: only the folder's own files")
    assert fingerprint(folder) == {"size": 7, "files": 2}


def test_a_torn_tail_is_cut_and_a_whole_ledger_is_left_alone(tmp_path):
    whole = VideoRecord("a.mp4", "/v/a.mp4", "ok", clips=1, finished_at=1.0)
    line = json.dumps(whole.to_dict()) + "\n"
    (tmp_path / "ledger.jsonl").write_text(line)
    Ledger(tmp_path)
    assert (tmp_path / "ledger.jsonl").read_text() == line  # nothing cut from a clean ledger
    (tmp_path / "ledger.jsonl").write_text(line + '{"video_id": "b.m')
    assert list(Ledger(tmp_path).records) == ["a.mp4"]
    assert (tmp_path / "ledger.jsonl").read_text() == line  # the torn line is gone from the file
    (tmp_path / "ledger.jsonl").write_text("")
    assert Ledger(tmp_path).records == {}


def test_a_record_without_fingerprint_is_done_for_any_input(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.append(VideoRecord("old.mp4", "/v/old.mp4", "ok"))  # ledger lines of older versions
    ledger.append(VideoRecord("new.mp4", "/v/new.mp4", "ok", fingerprint={"size": 3}))
    assert ledger.is_done("old.mp4", {"size": 9}, retry_failed=False)
    assert ledger.is_done("new.mp4", None, retry_failed=False)  # the input cannot be read: trust the ledger
    assert not ledger.is_done("new.mp4", {"size": 4}, retry_failed=False)


def test_publish_creates_the_folders_and_writes_sorted_rows(tmp_path):
    stem = video_stem("v.mp4")
    staging = tmp_path / ".staging" / stem
    staging.mkdir(parents=True)
    for name in (f"{stem}-000001.tar", f"{stem}-000000.tar", f"{stem}-000000.tar.json", ".x.tmp"):
        (staging / name).write_text(name)
    rows = [{"video_id": "v.mp4", "start": 16, "key": "b"}, {"start": 0, "video_id": "v.mp4", "key": "a"}]
    assert publish_video(tmp_path, stem, rows) == [f"{stem}-000000.tar", f"{stem}-000001.tar"]
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == sorted(
        [f"{stem}-000000.tar", f"{stem}-000000.tar.json", f"{stem}-000001.tar"]
    )
    assert (tmp_path / "parts" / f"{stem}.jsonl").read_text() == (
        '{"key": "b", "start": 16, "video_id": "v.mp4"}\n{"key": "a", "start": 0, "video_id": "v.mp4"}\n'
    )
    # a second video publishes into the existing folders; a video without staged files publishes nothing
    other = video_stem("w.mp4")
    assert publish_video(tmp_path, other, []) == []
    assert (tmp_path / "parts" / f"{other}.jsonl").read_text() == ""


def test_manifest_holds_the_ok_videos_sorted_by_video_and_start(tmp_path):
    ledger = Ledger(tmp_path)
    parts = tmp_path / "parts"
    parts.mkdir()
    rows = {
        "b.mp4": [
            {"video_id": "b.mp4", "start": 16, "key": "b16"},
            {"video_id": "b.mp4", "start": 0, "key": "b0"},
        ],
        "a.mp4": [{"video_id": "a.mp4", "start": 0, "key": "a0"}],
        "bad.mp4": [{"video_id": "bad.mp4", "start": 0, "key": "x"}],
        "c.mp4": [{"video_id": "c.mp4", "start": 0, "key": "c0"}],
    }
    for video, status in (("b.mp4", "ok"), ("bad.mp4", "failed"), ("a.mp4", "ok"), ("c.mp4", "ok")):
        (parts / f"{video_stem(video)}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[video]))
        ledger.append(VideoRecord(video, f"/v/{video}", status))
    assert rebuild_manifest(tmp_path, ledger) == 4
    assert (tmp_path / "manifest.jsonl").read_text() == (
        '{"key": "a0", "start": 0, "video_id": "a.mp4"}\n'
        '{"key": "b0", "start": 0, "video_id": "b.mp4"}\n'
        '{"key": "b16", "start": 16, "video_id": "b.mp4"}\n'
        '{"key": "c0", "start": 0, "video_id": "c.mp4"}\n'
    )


def test_clean_up_reports_the_staging_folder_and_copes_with_missing_folders(tmp_path):
    ledger = Ledger(tmp_path)
    assert clean_unclaimed(tmp_path, ledger) == []  # a fresh output: no shards/, parts/ or .staging/
    (tmp_path / ".staging" / "abc").mkdir(parents=True)
    assert clean_unclaimed(tmp_path, ledger) == [str(tmp_path / ".staging")]
    (tmp_path / ".staging").mkdir()
    assert clean_unclaimed(tmp_path, ledger) == []  # an empty staging folder is removed, not reported
    assert not (tmp_path / ".staging").exists()


def test_discard_video_drops_only_that_videos_staging(tmp_path):
    for stem in ("keep", "drop"):
        (tmp_path / ".staging" / stem).mkdir(parents=True)
        (tmp_path / ".staging" / stem / "x.tar.partial").write_text("x")
    discard_video(tmp_path, "drop")
    discard_video(tmp_path, "never-staged")
    assert [p.name for p in (tmp_path / ".staging").iterdir()] == ["keep"]


def test_summary_totals_by_hand(tmp_path):
    ledger = Ledger(tmp_path)
    node1 = {"node_id": "n1", "host": "h1"}
    ledger.append(VideoRecord("a", "/a", "ok", frames=100, clips=3, duration=1800.0, node=node1))
    ledger.append(VideoRecord("b", "/b", "ok", frames=50, clips=1, duration=900.0, node=node1))
    ledger.append(VideoRecord("c", "/c", "failed", "TruncatedVideoError: c", duration=0.0))
    ledger.append(
        VideoRecord("d", "/d", "skipped", "too short", frames=3, duration=0.6, node={"node_id": "n2"})
    )
    ledger.append(VideoRecord("other", "/o", "ok", frames=999, clips=9))  # not among this run's inputs
    summary = summarize(ledger, ["a", "b", "c", "d", "missing"], wall_seconds=4.0, frames_this_run=20)
    assert summary == {
        "videos": 4,
        "videos_ok": 2,
        "videos_failed": 1,
        "videos_skipped": 1,
        "frames": 153,
        "clips": 4,
        "hours_of_video": pytest.approx((1800 + 900 + 0.6) / 3600),
        "frames_this_run": 20,
        "wall_seconds_this_run": 4.0,
        "frames_per_second_this_run": 5.0,
        "failed": {"c": "TruncatedVideoError: c"},
        "videos_per_node": {"/n2": 1, "h1/n1": 2},
    }
    assert summarize(ledger, [], wall_seconds=0.0, frames_this_run=0)["frames_per_second_this_run"] == 0.0
    assert summarize(ledger, [], wall_seconds=0.5, frames_this_run=3)["frames_per_second_this_run"] == 6.0
    ledger.append(VideoRecord("e", "/e", "ok", node={"host": "h3"}))  # a node record without its id
    assert summarize(ledger, ["e"], 1.0, 0)["videos_per_node"] == {"h3/": 1}
    write_summary(tmp_path, summary)
    assert json.loads((tmp_path / "summary.json").read_text())["videos_per_node"] == {"/n2": 1, "h1/n1": 2}
