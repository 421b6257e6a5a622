"""Mining real videos with Ray: the paper's rule against recorded detections, failures, resume, EPIC folders."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from maskahand.core.config import MineRecipe
from maskahand.core.configbase import apply_overrides
from maskahand.core.fsutil import read_jsonl

pytestmark = pytest.mark.ray

SMALL = ["detector.backend=mediapipe", "mine.frame_max_side=128"]


def recipe(*overrides: str) -> MineRecipe:
    return apply_overrides(MineRecipe(), list(overrides))


def link_inputs(folder: Path, shared: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).symlink_to(shared / "videos" / name)
    return folder


def ledger_of(out: Path) -> dict[str, dict]:
    return {r["video_id"]: r for r in read_jsonl(out / "ledger.jsonl")}


def stem_of(out: Path, video_id: str) -> str:
    from maskahand.mine.ledger import video_stem

    return video_stem(video_id)


def shard_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").iterdir())}


def expected_windows(frames: list[dict], length=32, stride=16, min_frames=4) -> list[tuple[int, int]]:
    """The authors' rule (the default, mine.windows=authors) written out independently: kept (start, stop)
    windows over the recorded frames."""

    def hit(frame: dict) -> bool:
        return any(
            (h["state"] == "contact" and h["score"] > 0.99) or (h["state"] == "unknown" and h["score"] > 0.9)
            for h in frame["hands"]
        )

    n = len(frames)
    events, start, quiet = [], None, 0  # from 31 frames before a hit to 31 frames without one
    for pos, f in enumerate(frames):
        if start is None and hit(f):
            start, quiet = max(0, pos - (length - 1)), 0
        elif start is not None:
            quiet = 0 if hit(f) else quiet + 1
            if quiet == length - 1:
                events, start = [*events, (start, pos + 1)], None
    if start is not None:
        events.append((start, n))
    windows = []
    for a, b in events:
        if b - a < length:
            windows += [(a, b)] if b - a >= min_frames else []
            continue
        starts = list(range(a, b - length + 1, stride))
        windows += [(s, s + length) for s in [*starts, *([b - length] if starts[-1] < b - length else [])]]
    return windows


# --------------------------------------------------------------------------------------------------
# The four real videos (session fixture shared with the synth tests)


def test_mediapipe_clips_follow_the_rule_on_recorded_detections(mined_clip_shards):
    from maskahand.shards.reader import clip_dataset

    out = mined_clip_shards
    ledger = ledger_of(out)
    assert sorted(ledger) == sorted(
        ["hands_pillow.mp4", "hands_teddy.mp4", "ego4d_stirring.mp4", "opra_espresso_vp9.mp4"]
    )
    assert all(r["status"] == "ok" for r in ledger.values()), ledger
    manifest = list(read_jsonl(out / "manifest.jsonl"))
    samples = {
        s.key: s for s in clip_dataset(str(out / "shards"), split_by_node=False, split_by_worker=False)
    }
    assert len(samples) == len(manifest) == sum(r["clips"] for r in ledger.values())

    for video_id, rec in ledger.items():
        frames = list(read_jsonl(out / "parts" / f"{stem_of(out, video_id)}.frames.jsonl"))
        assert len(frames) == rec["frames"] > 0
        # 5 fps sampling: one frame per 0.2 s step, source indices increasing
        assert [f["pos"] for f in frames] == list(range(len(frames)))
        assert all(b["index"] > a["index"] for a, b in zip(frames, frames[1:]))
        assert all(abs(b["pts"] - a["pts"] - 0.2) < 0.06 for a, b in zip(frames, frames[1:]))

        rows = [r for r in manifest if r["video_id"] == video_id]
        want = expected_windows(frames)
        assert [(r["start"], r["stop"]) for r in rows] == want, video_id
        # The README of the shared data: hands interact in all four videos, so each yields a clip.
        assert want, f"{video_id}: no interacting frame among {len(frames)}"
        for row in rows:
            window = frames[row["start"] : row["stop"]]
            sample = samples[row["key"]]
            meta = sample.meta
            assert sample.frames.shape[0] == row["num_frames"] == len(window)
            assert max(sample.frames.shape[2:]) == 256
            assert meta["frame_indices"] == [f["index"] for f in window]
            assert (row["first_frame"], row["last_frame"]) == (window[0]["index"], window[-1]["index"])
            assert meta["detections"] == [f["hands"] for f in window]
            assert meta["interacting"] == [t for t, f in enumerate(window) if f["interacting"]]
            assert row["interacting_frames"] == [window[t]["index"] for t in meta["interacting"]]
            assert meta["rule"]["unknown_rule"] == "score" and meta["detector"]["name"] == "mediapipe"
            assert meta["rule"]["windows"] == "authors" and meta["rule"]["contact_judged"] is False
            h, w = sample.frames.shape[2:]
            for hands in meta["detections"]:
                for hand in hands:
                    x1, y1, x2, y2 = hand["box"]
                    assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
        # strides: clip starts are 16 apart; an end-aligned clip ends at the last frame (each of these
        # short videos is one interaction event)
        for a, b in zip(rows, rows[1:]):
            assert b["start"] - a["start"] == 16 or b["stop"] == len(frames)


def test_show_draws_a_contact_sheet(mined_clip_shards, tmp_path, capsys):
    from PIL import Image

    from maskahand.cli import main

    sheet = tmp_path / "sheet.png"
    assert main(["mine", "show", str(mined_clip_shards), "--out", str(sheet), "--clips", "4"]) == 0
    assert "4 clip(s)" in capsys.readouterr().out
    image = Image.open(sheet)
    # four clips stacked, each a 16 px title bar above a row of frames (160 px on their longer side)
    assert image.size[0] >= 8 * 80 and image.size[1] >= 4 * (16 + 80)
    assert len(set(image.convert("L").getdata())) > 50


# --------------------------------------------------------------------------------------------------
# Bad inputs, kill and resume (one reference run over real, corrupt and empty inputs)

RESUME_VIDEOS = ["ego4d_stirring.mp4", "hands_teddy.mp4", "opra_espresso_vp9.mp4"]
RESUME = [*SMALL, "workers.decoders=1", "shards.max_samples=1"]  # one clip per shard: several shards


def make_inputs(folder: Path, shared: Path) -> Path:
    inputs = link_inputs(folder, shared, RESUME_VIDEOS)
    (inputs / "empty.mp4").write_bytes(b"")
    (inputs / "corrupt.mp4").write_bytes((shared / "videos" / "hands_teddy.mp4").read_bytes()[:4000])
    (inputs / "sub").mkdir()
    (inputs / "sub" / "text.mkv").write_text("not a video at all\n")
    return inputs


@pytest.fixture(scope="module")
def reference_run(shared_data, ray_session, tmp_path_factory):
    from maskahand.mine.pipeline import mine

    base = tmp_path_factory.mktemp("mine_ref")
    inputs = make_inputs(base / "in", shared_data)
    out = base / "out"
    summary = mine(recipe(*RESUME), str(inputs), out, progress=False)
    return inputs, out, summary


def test_corrupt_and_empty_files_fail_and_the_rest_is_mined(reference_run, capsys):
    from maskahand.cli import main

    inputs, out, summary = reference_run
    ledger = ledger_of(out)
    for name in RESUME_VIDEOS:
        assert ledger[name]["status"] == "ok" and ledger[name]["clips"] >= 1, ledger[name]
    for bad, error in [("empty.mp4", "EmptyVideoError"), ("corrupt.mp4", "TruncatedVideoError")]:
        assert ledger[bad]["status"] == "failed"
        assert ledger[bad]["reason"].startswith(error) and bad in ledger[bad]["reason"]
    assert ledger["sub/text.mkv"]["status"] == "failed" and "text.mkv" in ledger["sub/text.mkv"]["reason"]
    assert (summary["videos_ok"], summary["videos_failed"]) == (3, 3)
    assert {r["video_id"] for r in read_jsonl(out / "manifest.jsonl")} == set(RESUME_VIDEOS)
    assert not (out / ".staging").exists() or not any((out / ".staging").iterdir())

    # Re-running the same command on the finished output does nothing and says so.
    before = (out / "ledger.jsonl").read_bytes()
    argv = ["mine", "--videos", str(inputs), "--out", str(out), "--no-progress", *RESUME]
    assert main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "ledger.jsonl").read_bytes() == before


class SimulatedCrash(Exception):
    pass


def test_crashes_then_resume_give_the_uninterrupted_result(reference_run, shared_data, tmp_path):
    """Crash once with a video's shards in place but no ledger line, once right after a ledger line."""
    from maskahand.mine.pipeline import mine

    inputs, reference, _ = reference_run  # the same inputs: clip meta records the video paths
    out = tmp_path / "out"

    def crash_at(point: str, victim: str):
        def fault(at: str, video_id: str) -> None:
            if at == point and video_id == victim:
                raise SimulatedCrash(f"{point} {video_id}")

        return fault

    with pytest.raises(SimulatedCrash):
        mine(
            recipe(*RESUME), str(inputs), out, progress=False, fault=crash_at("published", "hands_teddy.mp4")
        )
    done = ledger_of(out)
    assert "hands_teddy.mp4" not in done and "opra_espresso_vp9.mp4" not in done
    assert any(p.name.startswith(stem_of(out, "hands_teddy.mp4")) for p in (out / "shards").iterdir())

    with pytest.raises(SimulatedCrash):
        mine(recipe(*RESUME), str(inputs), out, progress=False, fault=crash_at("recorded", "hands_teddy.mp4"))
    assert "hands_teddy.mp4" in ledger_of(out) and "opra_espresso_vp9.mp4" not in ledger_of(out)

    # --retry-failed also tries the three bad inputs again (they fail again, each with a new ledger line)
    summary = mine(recipe(*RESUME), str(inputs), out, progress=False, retry_failed=True)
    assert (summary["videos_ok"], summary["videos_failed"]) == (3, 3)
    lines = [r["video_id"] for r in read_jsonl(out / "ledger.jsonl")]
    assert lines.count("empty.mp4") == 2 and lines.count("hands_teddy.mp4") == 1
    assert shard_digests(out) == shard_digests(reference)
    assert (out / "manifest.jsonl").read_bytes() == (reference / "manifest.jsonl").read_bytes()


# --------------------------------------------------------------------------------------------------
# Precomputed EPIC detections on an EPIC frame folder

EPIC_FILES = [16827 + 6 * k for k in range(11)]  # frame_0000016827.jpg ... every 6th frame at 60 fps
# 5 fps from a 60 fps folder: the first frame, then the first frame at or past each 0.2 s (12 frames)
EPIC_SAMPLED = [16827, 16839, 16851, 16863, 16875, 16887]
CONTACT_BOX = (0.30, 0.40, 0.55, 0.90)  # normalized, as EPIC stores them


def write_epic_detections(path: Path, video: str, contact_frame: int) -> None:
    from maskahand.detector.epic_proto import Detections
    from maskahand.detector.precomputed import write_epic

    messages = []
    for number in EPIC_FILES:
        msg = Detections(video_id=video, frame_number=number)
        hand = msg.hands.add(score=0.995 if number == contact_frame else 0.97)
        hand.state = 3 if number == contact_frame else 0  # PORTABLE_OBJECT / NO_CONTACT
        hand.bbox.top_left_x, hand.bbox.top, hand.bbox.right, hand.bbox.bottom = CONTACT_BOX
        messages.append(msg)
    write_epic(path, messages)


def test_precomputed_epic_detections_mine_epic_frame_folders(shared_data, ray_session, tmp_path):
    """Two copies of the EPIC folder: contact on a sampled frame (a clip), on a skipped frame (none)."""
    from maskahand.mine.pipeline import mine
    from maskahand.shards.reader import clip_dataset

    contact = {"epic_P01_01": 16851, "epic_P01_02": 16833}  # 16833 is not among the 5 fps frames
    source = shared_data / "frames" / "epic_P01_01"
    detections = tmp_path / "detections"
    detections.mkdir()
    for video, frame in contact.items():
        (tmp_path / "in" / video).mkdir(parents=True)
        for jpg in source.glob("frame_*.jpg"):
            (tmp_path / "in" / video / jpg.name).symlink_to(jpg)
        write_epic_detections(detections / f"{video}.pkl", video, frame)
    out = tmp_path / "out"
    r = recipe("detector.backend=precomputed", f"detector.precomputed.path={detections}")
    mine(r, str(tmp_path / "in"), out, progress=False)
    ledger = ledger_of(out)
    assert {v: rec["status"] for v, rec in ledger.items()} == {"epic_P01_01": "ok", "epic_P01_02": "ok"}
    for video in contact:
        frames = list(read_jsonl(out / "parts" / f"{stem_of(out, video)}.frames.jsonl"))
        assert [f["index"] for f in frames] == EPIC_SAMPLED
    assert ledger["epic_P01_02"]["clips"] == 0
    assert ledger["epic_P01_01"]["clips"] == 1
    samples = list(clip_dataset(str(out / "shards"), split_by_node=False, split_by_worker=False))
    assert len(samples) == 1
    sample = samples[0]
    at = EPIC_SAMPLED.index(contact["epic_P01_01"])
    assert sample.meta["video_id"] == "epic_P01_01"
    assert sample.meta["frame_indices"] == EPIC_SAMPLED  # shorter than 32 frames: kept whole
    assert sample.meta["interacting"] == [at]
    h, w = sample.frames.shape[2:]
    assert (w, h) == (456, 256)
    hand = sample.meta["detections"][at][0]
    assert hand["state"] == "contact" and hand["score"] == pytest.approx(0.995)
    want = [CONTACT_BOX[0] * w, CONTACT_BOX[1] * h, CONTACT_BOX[2] * w, CONTACT_BOX[3] * h]
    assert hand["box"] == pytest.approx(want, abs=1e-3)
    assert all(
        h["state"] == "no_contact"
        for t, hands in enumerate(sample.meta["detections"])
        if t != at
        for h in hands
    )
    assert sample.meta["detector"]["name"] == "precomputed"

    # the same short videos with short_video=drop: skipped, and the ledger says why
    dropped = tmp_path / "out_drop"
    mine(apply_overrides(r, ["mine.short_video=drop"]), str(tmp_path / "in"), dropped, progress=False)
    for rec in ledger_of(dropped).values():
        assert rec["status"] == "skipped" and rec["clips"] == 0
        assert (
            rec["reason"]
            == f"{len(EPIC_SAMPLED)} sampled frames: shorter than one clip (32); mine.short_video=drop"
        )
