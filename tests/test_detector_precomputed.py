"""precomputed backend: EPIC-KITCHENS-100 pickles (protobuf schema) and our JSON lines.

Frames are 256 x 456 (H x W), the size of EPIC-KITCHENS-55 frame folders, so normalized EPIC
coordinates become pixels by x * 456 and y * 256.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from maskahand.core.config import DetectorConfig
from maskahand.detector import DetectionsFileError, Hand, build_detector
from maskahand.detector.epic_proto import Detections
from maskahand.detector.precomputed import load_bytes_list_pickle, write_epic, write_jsonl

H, W = 256, 456


def frames(n: int, h: int = H, w: int = W) -> torch.Tensor:
    return torch.zeros(n, 3, h, w, dtype=torch.uint8)


def epic_messages() -> list:
    """Frames 1 and 7 of P01_01: a right hand on a portable object, a left hand touching itself."""
    f1 = Detections(video_id="P01_01", frame_number=1)
    h = f1.hands.add(score=0.99, state=3, side=1)
    h.bbox.top_left_x, h.bbox.top, h.bbox.right, h.bbox.bottom = 0.25, 0.5, 0.5, 0.75
    h.object_offset.x, h.object_offset.y = 0.1, -0.05
    h2 = f1.hands.add(score=0.5, state=1, side=0)
    h2.bbox.top_left_x, h2.bbox.top, h2.bbox.right, h2.bbox.bottom = 0.0, 0.0, 0.125, 0.25
    obj = f1.objects.add(score=0.8)
    obj.bbox.top_left_x, obj.bbox.top, obj.bbox.right, obj.bbox.bottom = 0.3, 0.5, 0.6, 0.9
    f7 = Detections(video_id="P01_01", frame_number=7)  # no hands
    return [f1, f7]


@pytest.fixture
def epic_dir(tmp_path: Path) -> Path:
    root = tmp_path / "hand-objects"
    write_epic(root / "P01" / "P01_01.pkl", epic_messages())
    return root


def precomputed(path: Path, **kw: object) -> DetectorConfig:
    cfg = DetectorConfig(backend="precomputed")
    cfg.precomputed.path = str(path)
    for k, v in kw.items():
        setattr(cfg.precomputed, k, v)
    return cfg


# The two frame-1 hands in pixels of a 456 x 256 frame (float32 protobuf values are exact here)
HAND_A = (0.25 * W, 0.5 * H, 0.5 * W, 0.75 * H)  # (114, 128, 228, 192)
HAND_B = (0.0, 0.0, 0.125 * W, 0.25 * H)  # (0, 0, 57, 64)


def test_epic_file_is_a_pickled_list_of_serialized_messages(epic_dir):
    blobs = load_bytes_list_pickle(epic_dir / "P01" / "P01_01.pkl")
    assert [Detections.FromString(b) for b in blobs] == epic_messages()
    with open(epic_dir / "P01" / "P01_01.pkl", "rb") as f:
        assert pickle.load(f) == blobs  # a standard pickle any EPIC tool can read


def test_epic_round_trip_in_frame_folder_numbering(epic_dir):
    det = build_detector(precomputed(epic_dir))
    # a frame folder: the reader's index is the 1-based file-name number
    out = det.detect(frames(2), video_id="epic/P01_01", frame_indices=[1, 7])
    assert out == [[Hand(HAND_A, "contact", pytest.approx(0.99)), Hand(HAND_B, "no_contact", 0.5)], []]
    assert out[0][0].box == HAND_A and out[0][1].box == HAND_B


def test_epic_video_file_indices_are_shifted_to_one_based(epic_dir):
    det = build_detector(precomputed(epic_dir))
    # a video file: decode index 0 is EPIC frame 1, index 6 is frame 7
    out = det.detect(frames(2), video_id="P01/P01_01.MP4", frame_indices=[0, 6])
    assert [len(h) for h in out] == [2, 0] and out[0][0].box == HAND_A
    forced = build_detector(precomputed(epic_dir, frame_offset=0))
    with pytest.raises(DetectionsFileError, match="frame 0"):
        forced.detect(frames(1), video_id="P01/P01_01.MP4", frame_indices=[0])


def test_boxes_are_scaled_to_the_pixels_of_the_frame_given(epic_dir):
    det = build_detector(precomputed(epic_dir))
    small = det.detect(frames(1, 128, 228), video_id="P01_01", frame_indices=[1])[0]
    assert small[0].box == (57.0, 64.0, 114.0, 96.0)
    # differently sized frames in one list
    mixed = det.detect([frames(1)[0], frames(1, 128, 228)[0]], video_id="P01_01", frame_indices=[1, 1])
    assert mixed[0][0].box == HAND_A and mixed[1][0].box == (57.0, 64.0, 114.0, 96.0)


def test_contact_mapping_comes_from_config(epic_dir):
    det = build_detector(precomputed(epic_dir, contact_states=[1, 3, 4]))  # count self-contact too
    states = [h.state for h in det.detect(frames(1), video_id="P01_01", frame_indices=[1])[0]]
    assert states == ["contact", "contact"]


def test_missing_frames_error_or_count_as_no_hands(epic_dir):
    with pytest.raises(DetectionsFileError, match="frame 2 .*on_missing=empty"):
        build_detector(precomputed(epic_dir)).detect(frames(1), video_id="P01_01", frame_indices=[2])
    lenient = build_detector(precomputed(epic_dir, on_missing="empty"))
    assert lenient.detect(frames(1), video_id="P01_01", frame_indices=[2]) == [[]]
    with pytest.raises(DetectionsFileError, match="no detections file for video 'P02_09'"):
        lenient.detect(frames(1), video_id="P02_09", frame_indices=[1])


def test_jsonl_round_trip_and_scaling(tmp_path):
    records = [
        {
            "video": "kitchen",
            "frame": 0,
            "width": 912,
            "height": 512,
            "hands": [
                {"box": [100, 50, 300, 250], "state": "contact", "score": 0.97},
                {"box": [500, 60, 700, 260], "state": "unknown", "score": 0.8},
            ],
        },
        {"video": "kitchen", "frame": 5, "width": 912, "height": 512, "hands": []},
    ]
    path = tmp_path / "dets.jsonl"
    write_jsonl(path, records)
    det = build_detector(precomputed(path, frame_offset=0))
    full = det.detect(frames(2, 512, 912), video_id="kitchen.mp4", frame_indices=[0, 5])
    assert [[(h.box, h.state, h.score) for h in f] for f in full] == [
        [
            ((100.0, 50.0, 300.0, 250.0), "contact", 0.97),
            (pytest.approx((500.0, 60.0, 700.0, 260.0)), "unknown", 0.8),
        ],
        [],
    ]
    half = det.detect(frames(1), video_id="kitchen.mp4", frame_indices=[0])  # 256 x 456: half size
    assert half[0][0].box == pytest.approx((50.0, 25.0, 150.0, 125.0))


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"video": "v", "frame": 0, "width": 10, "height": 10, "hands": []}\n'
        '{"video": "v", "frame": 1, "hands": []}\n'
    )
    with pytest.raises(DetectionsFileError, match=r"bad\.jsonl: line 2 .*'width'"):
        build_detector(precomputed(path)).detect(frames(1), video_id="v", frame_indices=[0])


class _CreatesAFile:
    """Unpickling this object would call ``open(path, "w")``: the classic pickle exploit."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_without_executing(tmp_path):
    victim = tmp_path / "pwned.txt"
    evil = tmp_path / "hand-objects" / "P01_01.pkl"
    evil.parent.mkdir()
    evil.write_bytes(pickle.dumps([b"\x08\x01", _CreatesAFile(str(victim))]))
    with pytest.raises(DetectionsFileError, match=r"P01_01\.pkl: .*refusing to load io\.open"):
        build_detector(precomputed(evil.parent)).detect(frames(1), video_id="P01_01", frame_indices=[1])
    assert not victim.exists()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"frame": b"x"}, "got a dict"),
        (["not bytes"], "non-bytes items"),
        (b"garbage", "pickle data was truncated|not an EPIC"),
    ],
)
def test_pickles_other_than_a_list_of_bytes_are_refused(tmp_path, payload, reason):
    path = tmp_path / "v.pkl"
    path.write_bytes(pickle.dumps(payload) if payload != b"garbage" else b"garbage")
    with pytest.raises(DetectionsFileError, match=reason):
        load_bytes_list_pickle(path)


def test_bytes_that_are_not_detections_are_refused(tmp_path):
    path = tmp_path / "v.pkl"
    path.write_bytes(pickle.dumps([b"\xff\xff\xff"]))
    with pytest.raises(DetectionsFileError, match="item 0 is not a serialized Detections"):
        build_detector(precomputed(path)).detect(frames(1), video_id="v", frame_indices=[1])
