"""One open per video: a reader's first pass carries on from the container its probe opened.

``av.open`` is wrapped to count real opens (it still opens): the probe opens the video, the first pass
opens nothing more, a second pass reopens; and every pass yields the same frames, pixel for pixel.
"""

from __future__ import annotations

import logging
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from maskahand.core.config import VideoConfig
from maskahand.video import (
    EmptyVideoError,
    Frame,
    NoDecodableFramesError,
    NotAVideoError,
    VideoNotFoundError,
    VideoReader,
    open_video,
)
from maskahand.video.source import StreamSource, VideoInput
from tests.test_video import faststart_copy, read_counter, rotate_display, write_counter_video


@pytest.fixture
def av_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``av.open`` call from now on (the real one runs): the name or file object it was given."""
    calls: list[str] = []
    real_open = av.open

    def counting_open(file, *args, **kwargs):
        calls.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    return calls


def frame_list(frames: Iterator[Frame]) -> list[tuple[int, float, torch.Tensor]]:
    return [(f.index, f.pts, f.image) for f in frames]


def assert_same_frames(got: list, want: list) -> None:
    assert [(i, p) for i, p, _ in got] == [(i, p) for i, p, _ in want]  # indices and pts, exactly
    for (_, _, a), (_, _, b) in zip(got, want):
        assert a.shape == b.shape and torch.equal(a, b)


def stats_tuple(reader: VideoReader) -> tuple[int, int, int, int, str]:
    s = reader.stats
    return (s.packets_read, s.frames_decoded, s.frames_returned, s.decode_errors, s.backend_used)


def damaged_early(src: Path, path: Path) -> None:
    """A copy whose 2nd and 3rd video packets are zeroed: decode errors while the probe looks for frame 0."""
    faststart_copy(src, path)
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size > 0]
    data = bytearray(path.read_bytes())
    for pos, size in packets[1:3]:
        data[pos : pos + size] = bytes(size)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "case", ["hands_teddy.mp4", "opra_espresso_vp9.mp4", "flipping_a_pancake.mkv", "rotated", "damaged"]
)
def test_first_pass_opens_once_and_equals_a_reopen(
    shared_data: Path, tmp_path: Path, av_opens: list[str], case: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = shared_data / "videos" / case
    if case == "rotated":  # a display matrix: the probe's first frame sets the rotation
        path = tmp_path / "portrait.mp4"
        faststart_copy(shared_data / "videos" / "ego4d_stirring.mp4", path)
        rotate_display(path)
    elif case == "damaged":  # decode errors counted by the probe must reach the pass's stats
        path = tmp_path / "damaged.mp4"
        damaged_early(shared_data / "videos" / "ego4d_stirring.mp4", path)
    caplog.set_level(logging.WARNING, logger="maskahand.video")
    av_opens.clear()  # the copies above were written with av.open
    reader = open_video(path, VideoConfig(fps=10, max_side=96))
    assert len(av_opens) == 1  # the probe
    first = frame_list(iter(reader))
    first_stats = stats_tuple(reader)
    assert len(av_opens) == 1  # the first pass carried on from the probe's container
    warnings_first = [r.getMessage() for r in caplog.records]
    caplog.clear()
    again = frame_list(iter(reader))
    assert len(av_opens) == 2  # a second pass decodes afresh
    assert len(first) > 5
    assert_same_frames(first, again)
    assert first_stats == stats_tuple(reader)
    assert warnings_first == [r.getMessage() for r in caplog.records]
    if case == "rotated":
        assert first[0][2].shape == (3, 96, 72)
    if case == "damaged":
        assert first_stats[3] == 2 and len(warnings_first) == 1


def member_input(tar: Path, name: str) -> VideoInput:
    with tarfile.open(tar) as archive:
        member = archive.getmember(name)
        return VideoInput(str(tar), offset=member.offset_data, size=member.size, member=name)


def test_tar_member_first_pass_opens_once(shared_data: Path, tmp_path: Path, av_opens: list[str]) -> None:
    counter = tmp_path / "counter.mp4"
    write_counter_video(counter, 45)
    tar = tmp_path / "videos.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(counter, arcname="a.mp4")
        archive.add(shared_data / "videos" / "ego4d_stirring.mp4", arcname="b.mp4")
    cfg = VideoConfig(fps=5)
    for name, local in (("a.mp4", counter), ("b.mp4", shared_data / "videos" / "ego4d_stirring.mp4")):
        source = StreamSource(member_input(tar, name))
        try:
            av_opens.clear()
            reader = open_video(source, cfg)
            first = frame_list(iter(reader))
            assert len(av_opens) == 1
            again = frame_list(iter(reader))
            assert len(av_opens) == 2
        finally:
            source.close()
        assert_same_frames(first, again)
        assert_same_frames(first, frame_list(iter(open_video(local, cfg))))  # as from the local file
    assert [read_counter(image) for _, _, image in frame_list(iter(open_video(counter, cfg)))] == list(
        range(0, 45, 6)
    )


def test_with_max_side_reuses_the_probe_and_its_container(
    shared_data: Path, tmp_path: Path, av_opens: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from maskahand.video import probe

    checks: list[str] = []
    real_check = probe.check_file
    monkeypatch.setattr(probe, "check_file", lambda p: (checks.append(str(p)), real_check(p))[1])
    path = shared_data / "videos" / "hands_teddy.mp4"
    cfg = VideoConfig(fps=5)
    av_opens.clear()
    reader = open_video(path, cfg)
    assert (len(av_opens), len(checks)) == (1, 1)
    small = reader.with_max_side(80)
    got = frame_list(iter(small))
    assert (len(av_opens), len(checks)) == (1, 1)  # no second probe, no second open
    fresh = open_video(path, VideoConfig(fps=5, max_side=80))
    assert small.info == fresh.info and small.config == fresh.config
    assert max(small.info.frame_width, small.info.frame_height) == 80
    assert_same_frames(got, frame_list(iter(fresh)))
    # the original reader lost its container to ``small``: it reopens, at its own (source) size
    full = frame_list(iter(reader))
    assert full[0][2].shape[-2:] == (reader.info.height, reader.info.width)
    assert [(i, p) for i, p, _ in full] == [(i, p) for i, p, _ in got]
    # once a pass has taken the container, the resized reader reopens and still agrees
    started = open_video(path, VideoConfig(fps=5, max_side=80))
    passing = iter(started)
    next(passing)
    assert_same_frames(frame_list(iter(started.with_max_side(80))), frame_list(iter(fresh)))
    # streamed: the same over a tar member
    tar = tmp_path / "one.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(path, arcname="v.mp4")
    source = StreamSource(member_input(tar, "v.mp4"))
    try:
        av_opens.clear()
        streamed = open_video(source, cfg).with_max_side(80)
        assert_same_frames(frame_list(iter(streamed)), got)
        assert len(av_opens) == 1
    finally:
        source.close()


def open_fds(path: Path) -> int:
    """How many of this process's file descriptors point at ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            continue
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count open files")
def test_a_reader_never_iterated_leaves_nothing_open(tmp_path: Path) -> None:
    path = tmp_path / "counter.mp4"
    write_counter_video(path, 45)
    reader = open_video(path, VideoConfig(fps=5))
    assert open_fds(path) == 1  # the probe's container, kept for the first pass
    batches = reader.batches(4)  # as the miner does: a generator made, then closed before it ran
    batches.close()
    reader.close()
    assert open_fds(path) == 0
    dropped = open_video(path, VideoConfig(fps=5))
    assert open_fds(path) == 1
    del dropped  # no close(): garbage collection closes it
    assert open_fds(path) == 0
    read = open_video(path, VideoConfig(fps=5))
    assert len(list(read)) == 8 and open_fds(path) == 0  # a finished pass closed it
    started = open_video(path, VideoConfig(fps=5))
    frames = iter(started)
    next(frames)
    frames.close()  # a pass stopped early (the miner's _close_reader)
    assert open_fds(path) == 0
    # a probe that fails closes what it opened
    blank = tmp_path / "blank.mp4"
    data = bytearray(path.read_bytes())
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            if packet.size > 0:
                data[packet.pos : packet.pos + packet.size] = bytes(packet.size)
    blank.write_bytes(bytes(data))
    with pytest.raises(NoDecodableFramesError):
        open_video(blank)
    assert open_fds(blank) == 0


@pytest.mark.parametrize("count", [1, 2, 20])
def test_counter_frames_match_after_handover(tmp_path: Path, av_opens: list[str], count: int) -> None:
    """Every frame kept (fps at the source rate): the probe's frame 0 is yielded once, not twice or never,
    also when the threaded decoder holds every frame back until the stream's end (1 and 2 frames)."""
    path = tmp_path / "counter.mp4"
    write_counter_video(path, count)
    av_opens.clear()
    reader = open_video(path, VideoConfig(fps=30))
    frames = list(reader)
    assert len(av_opens) == 1
    assert [f.index for f in frames] == list(range(count))
    assert [read_counter(f.image) for f in frames] == list(range(count))
    assert np.allclose([f.pts for f in frames], [i / 30 for i in range(count)], atol=0.002)
    assert reader.stats.frames_decoded == count and reader.stats.packets_read == count


def test_one_stat_check_keeps_the_typed_errors(tmp_path: Path) -> None:
    """check_file stats once and opens once; what it raises for each kind of non-video is unchanged."""
    device = tmp_path / "null.mp4"
    device.symlink_to(os.devnull)  # a character device: exists, opens, reads 0 bytes, yet is no file
    with pytest.raises(NotAVideoError, match="not a regular file"):
        open_video(device)
    dangling = tmp_path / "dangling.mp4"
    dangling.symlink_to(tmp_path / "gone.mp4")
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    empty = tmp_path / "empty.mp4"
    empty.touch()
    for missing in (tmp_path / "none.mp4", dangling, loop, empty / "x.mp4"):
        with pytest.raises(VideoNotFoundError, match="no such file"):
            open_video(missing)
    with pytest.raises(EmptyVideoError):
        open_video(empty)


@pytest.mark.parametrize("kind", ["frames", "decord"])
def test_with_max_side_for_frame_folders_and_decord(shared_data: Path, kind: str) -> None:
    path = shared_data / ("frames/epic_P01_01" if kind == "frames" else "videos/ego4d_stirring.mp4")
    backend = "decord" if kind == "decord" else "pyav"
    resized = open_video(path, VideoConfig(fps=5, backend=backend)).with_max_side(64)
    fresh = open_video(path, VideoConfig(fps=5, max_side=64, backend=backend))
    assert resized.info == fresh.info and max(fresh.info.frame_width, fresh.info.frame_height) == 64
    assert_same_frames(frame_list(iter(resized)), frame_list(iter(fresh)))
    assert (
        resized.stats.backend_used == fresh.stats.backend_used == ("jpeg" if kind == "frames" else "decord")
    )


def pyav_reference(path: Path, size: tuple[int, int], indices: set[int]) -> dict[int, np.ndarray]:
    """PyAV's own per-frame conversion (a fresh swscale context per frame) of the frames ``indices``."""
    reference = {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in indices:
                reference[index] = frame.to_ndarray(
                    format="rgb24", width=size[0], height=size[1], interpolation="AREA"
                )
    return reference


@pytest.mark.parametrize("max_side", [400, 96])  # 400: the H.264 video at its own size
def test_frames_equal_pyav_conversion_of_each_frame(shared_data: Path, max_side: int) -> None:
    """The reader's pixels are exactly what PyAV's own per-frame ``to_ndarray`` gives for those frames
    (the reader keeps one swscale converter across frames and videos): two passes interleaved frame by
    frame, over videos of other sizes and colour properties (BT.709 limited range VP9, untagged H.264)."""
    paths = [shared_data / "videos" / n for n in ("ego4d_stirring.mp4", "opra_espresso_vp9.mp4")]
    readers = [open_video(p, VideoConfig(fps=2, max_side=max_side)) for p in paths]
    got: list[list[Frame]] = [[], []]
    passes: list[Iterator[Frame] | None] = [iter(r) for r in readers]
    while any(p is not None for p in passes):
        for k, frames in enumerate(passes):
            frame = next(frames, None) if frames is not None else None
            if frame is None:
                passes[k] = None
            else:
                got[k].append(frame)
    for path, reader, frames in zip(paths, readers, got):
        size = (reader.info.frame_width, reader.info.frame_height)
        reference = pyav_reference(path, size, {f.index for f in frames})
        assert len(frames) > 3 and set(reference) == {f.index for f in frames}
        for frame in frames:
            assert np.array_equal(frame.image.permute(1, 2, 0).numpy(), reference[frame.index])
