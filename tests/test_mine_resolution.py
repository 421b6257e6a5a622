"""Mining decodes once, detects at the detector's input size and stores at mine.frame_max_side."""

from __future__ import annotations

import json

import pytest

from maskahand.core.config import DetectorConfig, MineConfig, MineRecipe
from maskahand.core.configbase import ConfigError, apply_overrides
from maskahand.mine.resolution import frame_sizes


def sizes(backend: str, width: int, height: int, **mine):
    det = apply_overrides(DetectorConfig(), [f"backend={backend}"])
    return frame_sizes(det, MineConfig(**mine), width, height)


def test_detection_size_follows_each_detector():
    # hircnn (min_size 800, max_size 1333): torchvision scales 1920x1080 by min(800/1080, 1333/1920)
    s = sizes("hircnn", 1920, 1080)
    assert s.detect == (1333, 750) and s.store == (480, 270) and s.decode == (1333, 750)
    # a frame smaller than the model's input goes in at full size: the model upsamples it itself
    assert sizes("hircnn", 640, 360).detect == (640, 360)
    assert sizes("mediapipe", 1920, 1080).detect == (1920, 1080)
    assert sizes("mediapipe", 1920, 1080).decode_max_side is None
    # precomputed boxes are normalized: the stored frames are enough
    assert sizes("precomputed", 1920, 1080).detect == (480, 270)
    capped = sizes("mediapipe", 1920, 1080, detect_max_side=960)
    assert capped.detect == (960, 540) and capped.decode == (960, 540) and capped.box_scale() == (0.5, 0.5)
    # sources smaller than the storage size are stored as they are
    assert sizes("hircnn", 320, 240).store == (320, 240)


def test_boxes_are_in_stored_pixels_and_the_detector_saw_the_full_frame(shared_data, tmp_path):
    from maskahand.mine.ledger import STAGING, frames_log_name
    from maskahand.mine.sources import discover_inputs
    from maskahand.mine.worker import DetectorWorker, VideoMiner

    recipe = apply_overrides(
        MineRecipe(),
        ["detector.backend=mediapipe", "mine.frame_max_side=128", "detector.batch_size=2", "mine.fps=2"]
        + ["mine.min_frames=2"],
    )
    detector = DetectorWorker(recipe.detector)
    miner = VideoMiner(recipe, str(tmp_path), detector.describe())
    video = str(shared_data / "videos" / "ego4d_stirring.mp4")
    (task,) = discover_inputs(video)
    raw: list[list[dict]] = []
    report, frames = miner.next_batch([(0, task)])
    assert (report["opened"][0]["width"], report["opened"][0]["height"]) == (384, 288)
    finished = {}
    while frames is not None:
        assert len(frames) == 1 and frames[0].shape[1:] == (3, 288, 384)  # the detector sees the full frame
        stored = miner.batches[report["batch"]].segments[0].stored
        assert stored.shape[1:] == (3, 96, 128)  # what is kept for storage
        dets = detector.detect(frames, report["segments"])
        raw += dets
        finished.update(miner.add_detections(report["batch"], dets)["finished"])
        report, frames = miner.next_batch()
        finished.update(report["finished"])  # a video ends in the call that finds no more frames
    result = finished[0]
    assert result["clips"] == 1 and result["rows"][0]["width"] == 128
    assert sum(len(d) for d in raw) > 0, "mediapipe found no hand in the stirring video"
    log_file = tmp_path / STAGING / task.stem / frames_log_name(task.stem)
    logged = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert len(logged) == len(raw) == result["frames"]
    for frame, hands in zip(logged, raw):
        stored = [v for h in frame["hands"] for v in h["box"]]
        assert stored == pytest.approx([v / 3 for h in hands for v in h["box"]], abs=1e-9)
        for h in frame["hands"]:
            x1, y1, x2, y2 = h["box"]
            assert 0 <= x1 <= x2 <= 128 and 0 <= y1 <= y2 <= 96


@pytest.mark.parametrize(
    "override, right_key",
    [("video.fps=10", "mine.fps=10"), ("video.max_side=256", "mine.frame_max_side=256")],
)
def test_video_keys_that_mine_does_not_read_are_refused(override, right_key):
    with pytest.raises(ConfigError, match=right_key):
        apply_overrides(MineRecipe(), [override])
    # repeating the mine value (as configs saved by earlier versions do) is accepted
    ok = apply_overrides(MineRecipe(), ["mine.fps=10", "video.fps=10", "video.max_side=480"])
    assert ok.mine.fps == 10 and ok.video.max_side == 480
