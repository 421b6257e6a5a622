"""maskahand.video on the shared real videos, synthetic long videos and broken files made here.

Expected frame counts, indices and timestamps come from OpenCV's own decode of each file (an
independent FFmpeg front end) and the sampling rule written out below, never from the reader itself.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import shutil
import struct
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from maskahand.core.config import VideoConfig
from maskahand.video import (
    EmptyVideoError,
    NoDecodableFramesError,
    NotAVideoError,
    NoVideoStreamError,
    TruncatedVideoError,
    UnreadableFrameError,
    VideoError,
    VideoNotFoundError,
    discover_videos,
    open_video,
)

SHARED_VIDEOS = [
    "ego4d_stirring.mp4",
    "flipping_a_pancake.mkv",
    "hands_pillow.mp4",
    "hands_teddy.mp4",
    "opra_espresso_vp9.mp4",
]
EPIC_FOLDER = "frames/epic_P01_01"


def opencv_decode(path: Path) -> tuple[list[float], list[np.ndarray], tuple[int, int]]:
    """Every decodable frame's timestamp (s) and RGB image, and (width, height), read by OpenCV."""
    cap = cv2.VideoCapture(str(path))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    times, images = [], []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        times.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
        images.append(bgr[:, :, ::-1])
    cap.release()
    return times, images, size


def expected_samples(times: list[float], fps: float, slack: float = 0.002) -> list[int]:
    """For each multiple k/fps up to the last frame, the first frame at or after it (ms rounding slack)."""
    picked: list[int] = []
    for k in range(math.floor(times[-1] * fps + slack * fps) + 1):
        first = next(i for i, t in enumerate(times) if t >= k / fps - slack)
        if not picked or first != picked[-1]:
            picked.append(first)
    return picked


@pytest.mark.parametrize("name", SHARED_VIDEOS)
def test_shared_video_at_5fps_matches_opencv(shared_data: Path, name: str) -> None:
    path = shared_data / "videos" / name
    times, images, (width, height) = opencv_decode(path)
    expected = expected_samples(times, 5.0)

    reader = open_video(path, VideoConfig(fps=5, max_side=200))
    assert (reader.info.width, reader.info.height, reader.info.kind) == (width, height, "file")
    batches = list(reader.batches(8))
    indices = [i for b in batches for i in b.indices]
    pts = [t for b in batches for t in b.pts]

    assert indices == expected
    assert all(b > a for a, b in zip(indices, indices[1:]))
    assert pts[0] == 0.0
    assert pts == pytest.approx([times[i] - times[0] for i in indices], abs=0.002)
    assert np.diff(pts) == pytest.approx(0.2, abs=0.01)
    out_w, out_h = reader.info.frame_width, reader.info.frame_height
    assert max(out_w, out_h) == 200
    assert out_w / out_h == pytest.approx(width / height, rel=0.02)
    for batch in batches:
        assert batch.frames.dtype == torch.uint8
        assert batch.frames.shape == (len(batch), 3, out_h, out_w)
        assert len(batch) <= 8
    # content: the resized frame matches OpenCV's full-size frame at the same index, resized here
    middle = len(indices) // 2
    reference = cv2.resize(images[indices[middle]], (out_w, out_h), interpolation=cv2.INTER_AREA)
    ours = batches[middle // 8].frames[middle % 8].permute(1, 2, 0).numpy()
    assert np.abs(ours.astype(int) - reference.astype(int)).mean() < 4.0


def test_full_size_frames_equal_opencv(shared_data: Path) -> None:
    path = shared_data / "videos" / "ego4d_stirring.mp4"
    times, images, _ = opencv_decode(path)
    frames = list(open_video(path, VideoConfig(fps=30)))
    assert [f.index for f in frames] == list(range(len(images)))
    for frame in frames[::7]:
        ours = frame.image.permute(1, 2, 0).numpy().astype(int)
        assert np.abs(ours - images[frame.index].astype(int)).mean() < 1.0  # RGB order and index agree


def test_epic_frame_folder_at_5fps(shared_data: Path) -> None:
    folder = shared_data / EPIC_FOLDER
    numbers = sorted(
        int(n[len("frame_") : -len(".jpg")]) for n in os.listdir(folder) if n.startswith("frame_")
    )
    times = [(n - numbers[0]) / 60.0 for n in numbers]
    expected = [numbers[i] for i in expected_samples(times, 5.0, slack=1e-9)]

    reader = open_video(folder, VideoConfig(fps=5, folder_fps=60, max_side=228))
    assert reader.info.kind == "frames"
    assert reader.info.fps == pytest.approx(10.0)  # every 6th frame of 60 fps
    assert reader.info.num_frames == len(numbers)
    frames = list(reader)
    assert [f.index for f in frames] == expected
    assert [f.pts for f in frames] == pytest.approx([(n - numbers[0]) / 60.0 for n in expected])
    assert np.diff([f.pts for f in frames]) == pytest.approx(0.2)
    assert frames[0].image.shape == (3, 128, 228)  # 456x256 halved
    assert frames[0].image.dtype == torch.uint8

    full = open_video(folder, VideoConfig(fps=5))
    first = next(iter(full))
    reference = cv2.imread(str(folder / f"frame_{numbers[0]:010d}.jpg"))[:, :, ::-1]
    assert np.abs(first.image.permute(1, 2, 0).numpy().astype(int) - reference.astype(int)).mean() < 1.0


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_espresso_yields_only_its_playable_frames(
    shared_data: Path, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = shared_data / "videos" / "opra_espresso_vp9.mp4"
    times, _, _ = opencv_decode(path)
    assert len(times) == 63
    caplog.set_level(logging.WARNING, logger="maskahand.video")
    reader = open_video(path, VideoConfig(fps=30, backend=backend, max_side=64))
    frames = list(reader)
    assert [f.index for f in frames] == list(range(63))
    assert [f.pts for f in frames] == pytest.approx(times, abs=0.002)
    assert reader.stats.backend_used == "pyav"
    fell_back = [r for r in caplog.records if "falling back to PyAV" in r.getMessage()]
    if backend == "decord":
        assert len(fell_back) == 1
        assert "opra_espresso_vp9.mp4" in fell_back[0].getMessage()
        assert "213" in fell_back[0].getMessage()  # the frame count decord claims
    else:
        assert not fell_back


def test_decord_used_when_it_agrees(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = shared_data / "videos" / "flipping_a_pancake.mkv"
    caplog.set_level(logging.WARNING, logger="maskahand.video")
    pyav = open_video(path, VideoConfig(fps=5, max_side=128))
    decord = open_video(path, VideoConfig(fps=5, max_side=128, backend="decord"))
    a, b = next(pyav.batches(64)), next(decord.batches(64))
    assert decord.stats.backend_used == "decord"
    assert not [r for r in caplog.records if "falling back" in r.getMessage()]
    assert b.indices == a.indices
    assert b.pts == pytest.approx(a.pts, abs=0.002)
    assert (b.frames.int() - a.frames.int()).abs().float().mean() < 3.0  # same frames, other resizer


def test_decord_duplicated_tail_is_rejected(shared_data: Path) -> None:
    from maskahand.video.decord_backend import DecordRejected, _without_duplicated_tail
    from maskahand.video.records import Frame

    real = list(open_video(shared_data / "videos" / "ego4d_stirring.mp4", VideoConfig(fps=5)))
    copies = [Frame(real[-1].image.clone(), real[-1].index + 6 * k, 0.0) for k in (1, 2, 3)]
    passed = []
    with pytest.raises(DecordRejected, match="copies of frame"):
        for frame in _without_duplicated_tail(iter(real + copies)):
            passed.append(frame.index)
    assert passed == [f.index for f in real]  # the copies were held back, never yielded
    # one repeated frame mid-video (a real static moment) passes through untouched
    one_copy = real[:3] + [Frame(real[2].image.clone(), 99, 0.0)] + real[3:]
    assert [f.index for f in _without_duplicated_tail(iter(one_copy))] == [f.index for f in one_copy]


def write_counter_video(path: Path, frames: int, codec: str = "libx264", fps: int = 30) -> None:
    """64x64 video whose frame i shows i in binary: 12 blocks of 16x16, white for a set bit."""
    options = {"preset": "ultrafast", "crf": "18"} if codec == "libx264" else {}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(frames):
            image = np.zeros((64, 64, 3), np.uint8)
            for bit in range(12):
                if i >> bit & 1:
                    row, col = divmod(bit, 4)
                    image[row * 16 : row * 16 + 16, col * 16 : col * 16 + 16] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def read_counter(image: torch.Tensor) -> int:
    gray = image.float().mean(0)
    return sum(1 << bit for bit in range(12) if gray[bit // 4 * 16 + 8, bit % 4 * 16 + 8] > 128)


def test_long_video_streams_lazily(tmp_path: Path) -> None:
    path = tmp_path / "counter.mp4"
    write_counter_video(path, 3000)
    reader = open_video(path, VideoConfig(fps=5))
    batches = reader.batches(4)
    first = next(batches)
    assert first.indices == [0, 6, 12, 18]
    assert [read_counter(img) for img in first.frames] == first.indices
    assert reader.stats.frames_decoded < 60  # of 3000: only what the first batch needed (+ decoder delay)
    rest = list(batches)
    assert reader.stats.frames_decoded == 3000
    indices = first.indices + [i for b in rest for i in b.indices]
    assert indices == list(range(0, 3000, 6))
    last = rest[-1]
    assert read_counter(last.frames[-1]) == last.indices[-1]
    assert last.pts[-1] == pytest.approx(2994 / 30)


@pytest.mark.parametrize(
    ("name", "codec"),
    [("vp9.webm", "libvpx-vp9"), ("mpeg4.avi", "mpeg4"), ("h264.mov", "libx264"), ("h264.mkv", "libx264")],
)
def test_every_container_kind(tmp_path: Path, name: str, codec: str) -> None:
    path = tmp_path / name
    write_counter_video(path, 45, codec=codec)
    frames = list(open_video(path, VideoConfig(fps=5)))
    assert [f.index for f in frames] == list(range(0, 45, 6))
    assert [read_counter(f.image) for f in frames] == list(range(0, 45, 6))
    assert [f.pts for f in frames] == pytest.approx([i / 30 for i in range(0, 45, 6)], abs=0.002)
    cut = tmp_path / f"cut_{name}"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(TruncatedVideoError):
        open_video(cut)


# --------------------------------------------------------------------------------------------------
# Bad inputs, each built here


def faststart_copy(src: Path, dst: Path) -> int:
    """Remux ``src`` with its index (moov) first; returns the byte offset of the media data payload."""
    with av.open(str(src)) as source, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)
    data = dst.read_bytes()
    return data.index(b"mdat") + 4


def assert_names(error: VideoError, path: Path) -> None:
    assert error.path == path
    assert error.reason
    assert str(path) in str(error)


def test_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(VideoNotFoundError) as e:
        open_video(tmp_path / "nope.mp4")
    assert_names(e.value, tmp_path / "nope.mp4")
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(EmptyVideoError) as e:
        open_video(empty)
    assert_names(e.value, empty)


def test_not_a_video(tmp_path: Path, shared_data: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("these are not the frames you are looking for\n" * 20)
    jpeg = tmp_path / "photo.mp4"
    shutil.copy(shared_data / "images" / "opra_inactive" / "684.jpg", jpeg)
    png = tmp_path / "catalogue.mkv"
    shutil.copy(shared_data / "images" / "opra_espresso_target.jpg", png)  # a PNG despite its name
    for path in (text, jpeg, png):
        with pytest.raises(NotAVideoError) as e:
            open_video(path)
        assert_names(e.value, path)


def test_audio_only_has_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "voice.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(NoVideoStreamError) as e:
        open_video(path)
    assert_names(e.value, path)
    assert "audio" in e.value.reason


def test_truncated(tmp_path: Path, shared_data: Path) -> None:
    original = shared_data / "videos" / "ego4d_stirring.mp4"
    fast = tmp_path / "fast.mp4"
    faststart_copy(original, fast)
    cases = {
        "index_last_cut.mp4": original.read_bytes(),  # moov at the end: cutting loses the index
        "index_first_cut.mp4": fast.read_bytes(),  # moov first: header intact, media data cut
        "cut.mkv": (shared_data / "videos" / "flipping_a_pancake.mkv").read_bytes(),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(TruncatedVideoError) as e:
            open_video(path)
        assert_names(e.value, path)
    # the intact faststart copy is a healthy video: the check does not flag it
    assert len(list(open_video(fast, VideoConfig(fps=5)))) == 10


def test_zero_decodable_frames(tmp_path: Path, shared_data: Path) -> None:
    path = tmp_path / "blanked.mp4"
    payload = faststart_copy(shared_data / "videos" / "ego4d_stirring.mp4", path)
    data = bytearray(path.read_bytes())
    data[payload:] = bytes(len(data) - payload)  # every packet's bytes zeroed; sizes and index intact
    path.write_bytes(bytes(data))
    with pytest.raises(NoDecodableFramesError) as e:
        open_video(path)
    assert_names(e.value, path)


def test_frame_folder_errors(tmp_path: Path, shared_data: Path) -> None:
    with pytest.raises(VideoNotFoundError):
        open_video(tmp_path / "no_such_folder")
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    (empty / "readme.txt").write_text("no frames here")
    with pytest.raises(EmptyVideoError) as e:
        open_video(empty)
    assert_names(e.value, empty)

    broken_first = tmp_path / "broken_first"
    broken_first.mkdir()
    (broken_first / "frame_0000000001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(UnreadableFrameError) as e:
        open_video(broken_first)
    assert_names(e.value, broken_first / "frame_0000000001.jpg")

    broken_later = tmp_path / "broken_later"
    shutil.copytree(shared_data / EPIC_FOLDER, broken_later)
    bad = broken_later / "frame_0000016851.jpg"  # pts 0.4 s: sampled at 5 fps
    bad.write_bytes(bad.read_bytes()[:200])
    reader = open_video(broken_later, VideoConfig(fps=5))
    seen = []
    with pytest.raises(UnreadableFrameError) as e:
        for frame in reader:
            seen.append(frame.index)
    assert seen == [16827, 16839]
    assert_names(e.value, bad)


def test_errors_are_catchable_per_video(tmp_path: Path, shared_data: Path) -> None:
    (tmp_path / "bad.mp4").write_text("nope")
    shutil.copy(shared_data / "videos" / "ego4d_stirring.mp4", tmp_path / "good.mp4")
    outcome = {}
    for video_id, path in discover_videos(tmp_path):
        try:
            outcome[video_id] = len(list(open_video(path)))
        except VideoError as e:
            outcome[video_id] = type(e).__name__
    assert outcome == {"bad.mp4": "NotAVideoError", "good.mp4": 10}


# --------------------------------------------------------------------------------------------------
# Discovery, sampling rule, CLI


def test_discover_folder_glob_and_list(tmp_path: Path) -> None:
    for rel in ["a/x.mp4", "a/b/y.MKV", "c.webm", "d.avi", "e.mov", "notes.txt", "a/.hidden.mp4", "f.mp3"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    frames = tmp_path / "epic" / "P01_01"
    frames.mkdir(parents=True)
    (frames / "frame_0000000001.jpg").write_bytes(b"")
    (tmp_path / "epic" / "P01_02").mkdir()  # no frames: not a video

    found = discover_videos(tmp_path)
    ids = [video_id for video_id, _ in found]
    assert ids == ["a/b/y.MKV", "a/x.mp4", "c.webm", "d.avi", "e.mov", "epic/P01_01"]
    assert dict(found)["epic/P01_01"] == frames
    assert discover_videos(str(tmp_path)) == found  # stable

    # a glob's root is the folder before its first wildcard
    assert [v for v, _ in discover_videos(f"{tmp_path}/a/**/*.*")] == ["b/y.MKV", "x.mp4"]
    assert discover_videos(f"{tmp_path}/epic/*") == [("P01_01", frames)]
    assert discover_videos(f"{tmp_path}/nothing_*.mp4") == []

    listing = tmp_path / "list.txt"
    listing.write_text(f"# my videos\na/x.mp4\n\n{frames}  # a frame folder\nmissing.mp4\n")
    assert discover_videos(listing) == [
        ("a/x.mp4", tmp_path / "a/x.mp4"),
        ("epic/P01_01", frames),
        ("missing.mp4", tmp_path / "missing.mp4"),  # kept: opening it raises per video
    ]
    with pytest.raises(VideoNotFoundError):
        discover_videos(tmp_path / "absent")


@pytest.mark.parametrize(
    ("times", "fps", "source_fps", "expected"),
    [
        # 30 fps rounded to ms (Matroska): every 3rd at 10 fps, every frame at 30 fps
        ([0, 0.033, 0.067, 0.1, 0.133, 0.167, 0.2, 0.233], 10, 30, [0, 3, 6]),
        ([0, 0.033, 0.067, 0.1, 0.133], 30, 30, [0, 1, 2, 3, 4]),
        # 25 fps source at 10 fps: multiples 0.1, 0.2, 0.3 are reached by 0.12, 0.2, 0.32
        ([0, 0.04, 0.08, 0.12, 0.16, 0.2, 0.24, 0.28, 0.32], 10, 25, [0, 3, 5, 8]),
        # a gap: after 0.2 the next frame is 1.0; then multiples continue above it
        ([0, 0.2, 1.0, 1.1, 1.2], 5, 10, [0, 1, 2, 4]),
    ],
)
def test_sampling_rule(times: list[float], fps: float, source_fps: float, expected: list[int]) -> None:
    from maskahand.video.sampling import FpsSampler

    sampler = FpsSampler(fps, source_fps)
    assert [i for i, t in enumerate(times) if sampler.accept(t)] == expected


def test_cli_probe(tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    from maskahand.cli import main

    out = tmp_path / "probe"
    path = shared_data / "videos" / "ego4d_stirring.mp4"
    assert main(["video", "probe", str(path), "--fps", "5", "--max-side", "128", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sampled_frames: 10" in printed  # 60 frames at 30 fps = 2 s
    assert "frame_size: [128, 96]" in printed
    assert "max_side: 128" in printed
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["video"] == {
        "backend": "pyav",
        "fps": 5.0,
        "max_side": 128,
        "folder_fps": 60.0,
        "threads": 0,
    }

    bad = tmp_path / "bad.mkv"
    bad.write_text("x")
    assert main(["video", "probe", str(bad), "video.fps=2"]) == 1
    assert "bad.mkv" in capsys.readouterr().err


def rotate_display(path: Path) -> None:
    """Set the track's display matrix (tkhd) to a quarter turn clockwise, as phones record portrait."""
    data = bytearray(path.read_bytes())
    tkhd = data.index(b"tkhd")
    version = data[tkhd + 4]
    matrix = tkhd + 4 + 4 + (20 if version == 0 else 32) + 8 + 8  # after times, ids, layer, volume
    assert struct.unpack(">9i", data[matrix : matrix + 36]) == (1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_display_rotation_applied(tmp_path: Path, shared_data: Path, backend: str) -> None:
    path = tmp_path / "portrait.mp4"
    faststart_copy(shared_data / "videos" / "ego4d_stirring.mp4", path)
    rotate_display(path)
    times, images, (width, height) = opencv_decode(path)  # OpenCV applies the display matrix itself
    assert images[0].shape == (384, 288, 3)
    reader = open_video(path, VideoConfig(fps=5, backend=backend))
    assert (reader.info.width, reader.info.height) == (288, 384) == (width, height)
    frames = list(reader)
    assert reader.stats.backend_used == backend
    assert [f.index for f in frames] == expected_samples(times, 5.0)
    for frame in frames[::3]:
        ours = frame.image.permute(1, 2, 0).numpy().astype(int)
        assert np.abs(ours - images[frame.index].astype(int)).mean() < 1.0
    small = next(iter(open_video(path, VideoConfig(fps=5, max_side=96, backend=backend))))
    assert small.image.shape == (3, 96, 72)


def test_corrupt_packets_mid_video_are_skipped_with_a_warning(
    tmp_path: Path, shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "damaged.mp4"
    faststart_copy(shared_data / "videos" / "ego4d_stirring.mp4", path)
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size > 0]
    data = bytearray(path.read_bytes())
    for pos, size in packets[20:23]:  # three packets' bytes zeroed
        data[pos : pos + size] = bytes(size)
    path.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, logger="maskahand.video")
    reader = open_video(path, VideoConfig(fps=30))
    frames = list(reader)
    assert reader.stats.decode_errors == 3
    assert len(frames) == len(packets) - 3
    assert any("3 of" in r.getMessage() and "damaged.mp4" in r.getMessage() for r in caplog.records)
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:]))


def test_errors_survive_pickling(tmp_path: Path) -> None:
    error = NoDecodableFramesError(tmp_path / "x.mp4", "0 frames decoded from 61 packets")
    copy = pickle.loads(pickle.dumps(error))  # Ray ships errors between processes this way
    assert type(copy) is NoDecodableFramesError
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))
