"""The mining ledger and output clean-up on real files (no Ray, no detector)."""

from __future__ import annotations

import json
import subprocess
import sys

from maskahand.mine.ledger import (
    Ledger,
    VideoRecord,
    clean_unclaimed,
    publish_video,
    rebuild_manifest,
    video_stem,
)


def test_last_line_wins_and_a_torn_tail_is_ignored(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.append(
        VideoRecord("a.mp4", "/v/a.mp4", "failed", "TruncatedVideoError: x", fingerprint={"size": 1})
    )
    ledger.append(VideoRecord("a.mp4", "/v/a.mp4", "ok", clips=2, shards=["s.tar"], fingerprint={"size": 1}))
    with open(tmp_path / "ledger.jsonl", "a") as f:
        f.write('{"video_id": "b.mp4", "stat')  # a crash in the middle of an append
    again = Ledger(tmp_path)
    assert list(again.records) == ["a.mp4"]
    assert again.records["a.mp4"].status == "ok" and again.records["a.mp4"].clips == 2
    assert again.is_done("a.mp4", {"size": 1}, retry_failed=False)
    assert not again.is_done("a.mp4", {"size": 2}, retry_failed=False)  # the input changed
    assert not again.is_done("b.mp4", {"size": 1}, retry_failed=False)


def test_failed_videos_are_done_unless_retried(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.append(VideoRecord("bad.mp4", "/v/bad.mp4", "failed", "EmptyVideoError: empty"))
    assert ledger.is_done("bad.mp4", None, retry_failed=False)
    assert not ledger.is_done("bad.mp4", None, retry_failed=True)


def test_unclaimed_outputs_are_removed_and_claimed_ones_kept(tmp_path):
    done, unfinished = video_stem("done.mp4"), video_stem("unfinished.mp4")
    # A finished video: staged shard + frames log, published, then recorded.
    staging = tmp_path / ".staging" / done
    staging.mkdir(parents=True)
    (staging / f"{done}-000000.tar").write_bytes(b"tar")
    (staging / f"{done}-000000.tar.json").write_text("{}")
    (staging / f"{done}-000001.tar.partial").write_bytes(b"half")
    (staging / f"{done}.frames.jsonl").write_text('{"pos": 0}\n')
    shards = publish_video(tmp_path, done, [{"video_id": "done.mp4", "start": 0, "key": "k"}])
    assert shards == [f"{done}-000000.tar"]
    assert not staging.exists() and (tmp_path / "parts" / f"{done}.frames.jsonl").exists()
    ledger = Ledger(tmp_path)
    ledger.append(VideoRecord("done.mp4", "/v/done.mp4", "ok", clips=1, shards=shards))
    # An unfinished one, killed after publishing but before its ledger line, and one mid-staging.
    (tmp_path / "shards" / f"{unfinished}-000000.tar").write_bytes(b"tar")
    (tmp_path / "shards" / f"{unfinished}-000000.tar.json").write_text("{}")
    (tmp_path / "parts" / f"{unfinished}.jsonl").write_text("")
    (tmp_path / ".staging" / "x").mkdir(parents=True)
    removed = clean_unclaimed(tmp_path, ledger)
    assert len(removed) == 4
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        f"{done}-000000.tar",
        f"{done}-000000.tar.json",
    ]
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == [f"{done}.frames.jsonl", f"{done}.jsonl"]
    assert not (tmp_path / ".staging").exists()
    assert rebuild_manifest(tmp_path, ledger) == 1


def test_mine_help_is_light_and_documents_both_forms():
    code = "import sys; from maskahand.cli import main; main(['mine', '--help'])"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    assert "--videos" in run.stdout and "mine show OUT" in run.stdout
    probe = "import sys, maskahand.mine.cli; print(sorted(m for m in ('torch', 'ray', 'mediapipe') if m in sys.modules))"
    light = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert light.stdout.strip() == "[]"


def test_outputs_of_a_video_to_mine_again_are_removed_even_when_claimed(tmp_path):
    stem = video_stem("changed.mp4")
    (tmp_path / ".staging" / stem).mkdir(parents=True)
    (tmp_path / ".staging" / stem / f"{stem}-000000.tar").write_bytes(b"old")
    shards = publish_video(tmp_path, stem, [{"video_id": "changed.mp4", "start": 0, "key": "k"}])
    ledger = Ledger(tmp_path)
    ledger.append(VideoRecord("changed.mp4", "/v/changed.mp4", "ok", clips=1, shards=shards))
    assert clean_unclaimed(tmp_path, ledger) == []  # claimed: kept
    removed = clean_unclaimed(tmp_path, ledger, redo={stem})
    assert sorted(removed) == sorted(
        [str(tmp_path / "shards" / shards[0]), str(tmp_path / "parts" / f"{stem}.jsonl")]
    )


def test_an_append_after_a_torn_tail_is_read_back(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.append(VideoRecord("a.mp4", "/v/a.mp4", "ok", clips=1, fingerprint={"size": 1}))
    with open(tmp_path / "ledger.jsonl", "a") as f:
        f.write('{"video_id": "b.mp4", "stat')  # killed in the middle of an append
    resumed = Ledger(tmp_path)
    resumed.append(VideoRecord("b.mp4", "/v/b.mp4", "ok", clips=3, fingerprint={"size": 2}))
    again = Ledger(tmp_path)  # the next restart must still read the ledger, with both videos done
    assert again.records["a.mp4"].clips == 1
    assert again.records["b.mp4"].clips == 3


def test_the_ledger_index_gives_the_parsed_state_and_only_new_lines_are_parsed(tmp_path, monkeypatch):
    """A local ledger's state is cached in .ledger.index; a reload from it equals a full parse, lines appended
    after it are read, and an index of another (replaced) ledger file is ignored."""
    import dataclasses

    from maskahand.mine import ledger as lg

    def state(led: Ledger) -> dict:
        return {v: dataclasses.asdict(led.records[v]) for v in led.records}

    led = Ledger(tmp_path)
    led.append(VideoRecord("a.mp4", "/v/a.mp4", "failed", "TruncatedVideoError: a", fingerprint={"size": 1}))
    led.append(
        VideoRecord(
            "b.mp4",
            "/v/b.mp4",
            "ok",
            frames=9,
            clips=2,
            duration=3.5,
            fingerprint={"size": 2, "mtime_ns": 5},
            node={"host": "h", "node_id": "n"},
        )
    )
    led.append(
        VideoRecord("c.mp4", "/v/c.mp4", "ok", shards=["odd-name.tar"], fingerprint={"etag": "x", "size": 3})
    )
    led.append(VideoRecord("a.mp4", "/v/a.mp4", "skipped", "too short", frames=3))
    monkeypatch.setattr(lg, "INDEX_AFTER_LINES", 1)
    parsed = state(Ledger(tmp_path))  # parses 4 lines: writes the index
    assert (tmp_path / lg.INDEX).is_file()
    indexed = Ledger(tmp_path)
    assert state(indexed) == parsed and parsed["c.mp4"]["shards"] == ["odd-name.tar"]
    assert indexed.is_done("b.mp4", {"mtime_ns": 5, "size": 2}, False)
    assert not indexed.is_done("b.mp4", {"mtime_ns": 6, "size": 2}, False)
    assert indexed.is_done("c.mp4", {"size": 3, "etag": "x"}, False)
    indexed.append(
        VideoRecord("d.mp4", "/v/d.mp4", "ok", clips=7)
    )  # after the index: parsed on the next load
    assert Ledger(tmp_path).records["d.mp4"].clips == 7
    # a different ledger file (the output reused): the index no longer matches its bytes and is ignored
    (tmp_path / "ledger.jsonl").write_text(
        "".join(
            json.dumps(VideoRecord(v, f"/v/{v}", "ok", clips=1, finished_at=1.0).to_dict()) + "\n"
            for v in ("x.mp4", "y.mp4", "z.mp4", "w.mp4", "u.mp4", "t.mp4")
        )
    )
    assert sorted(Ledger(tmp_path).records) == ["t.mp4", "u.mp4", "w.mp4", "x.mp4", "y.mp4", "z.mp4"]
