"""Open a video file with PyAV and turn every way it can be unreadable into a typed error."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import av

from ..core.config import VideoConfig
from .container_check import stream_truncation_problem
from .errors import (
    EmptyVideoError,
    NoDecodableFramesError,
    NotAVideoError,
    NoVideoStreamError,
    TruncatedVideoError,
    VideoError,
    VideoNotFoundError,
)
from .records import VideoInfo
from .sampling import output_size
from .source import StreamSource

#: A video a decoder can open: a local path, or a :class:`StreamSource` (a URL, a tar member).
Openable = Union[Path, StreamSource]

logger = logging.getLogger("maskahand.video")

# FFmpeg demuxers that read a still image (or text) as a one-frame "video".
STILL_IMAGE_FORMATS = {"image2", "tty", "webp_pipe"}

# stat() failures that mean "there is no such file" (those Path.exists() answers False to)
ABSENT_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP}


def check_file(path: Path) -> None:
    """Existence, size and readability of a video file, before any decoder sees it.

    One ``stat`` and one open: the container's declared sizes are read through the same handle.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno not in ABSENT_ERRNOS:  # a permission error on a parent folder, ...: raised as is
            raise
        raise VideoNotFoundError(path, "no such file or folder") from e
    except ValueError as e:  # a NUL byte in the name
        raise VideoNotFoundError(path, "no such file or folder") from e
    if not stat.S_ISREG(st.st_mode):
        raise NotAVideoError(path, "not a regular file")
    try:
        with open(path, "rb") as f:
            if st.st_size == 0:
                raise EmptyVideoError(path, "the file has 0 bytes")
            problem = stream_truncation_problem(f, st.st_size)
    except PermissionError as e:
        raise VideoError(path, f"cannot read it ({e.strerror})") from e
    if problem is not None:
        raise TruncatedVideoError(path, problem)


def check_stream(source: StreamSource) -> None:
    """:func:`check_file` for a streamed video: storage errors (missing object, permission, unreachable)
    are raised typed by the first open; then size and the container's declared sizes."""
    if source.size == 0:
        raise EmptyVideoError(str(source), "the object has 0 bytes")
    with source.open() as f:
        problem = stream_truncation_problem(f, source.size)  # type: ignore[arg-type]
    if problem is not None:
        raise TruncatedVideoError(str(source), problem)


def open_container(path: Openable) -> av.container.InputContainer:
    """``av.open`` with its failures mapped to typed errors naming ``path``."""
    if isinstance(path, StreamSource):
        try:
            container = av.open(path.open(), "r", metadata_errors="ignore")
        except av.FFmpegError as e:
            raise NotAVideoError(
                str(path), f"FFmpeg cannot read a container in it ({e.strerror or e})"
            ) from e
        return _check_streams(str(path), container)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        if e.errno == errno.ENOENT:
            raise VideoNotFoundError(path, "no such file") from e
        raise NotAVideoError(path, f"FFmpeg cannot read a container in it ({e.strerror or e})") from e
    return _check_streams(path, container)


def _check_streams(path: Path | str, container: av.container.InputContainer) -> av.container.InputContainer:
    fmt = container.format.name
    if fmt in STILL_IMAGE_FORMATS or fmt.endswith("_pipe"):
        container.close()
        raise NotAVideoError(path, f"it is a still image or text (FFmpeg format '{fmt}')")
    if not container.streams.video:
        kinds: list[str] = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise NoVideoStreamError(path, f"streams present: {', '.join(kinds)}")
    return container


@dataclass
class OpenedVideo:
    """An open container and where its demuxing stands: the probe's, handed to a reader's first pass.

    The pass carries on from here (``decoded`` first, then ``packets``), so the video is opened once
    and its first frame decoded once. ``packets_read``/``decode_errors``/``last_error`` count what was
    demuxed and failed so far, as the pass's :class:`~maskahand.video.records.DecodeStats` would.
    """

    container: av.container.InputContainer
    stream: av.video.stream.VideoStream
    packets: Iterator[av.Packet]
    decoded: list[av.VideoFrame] = field(default_factory=list)  # decoded, not yet yielded
    packets_read: int = 0  # non-empty packets (the last, empty one only flushes the decoder)
    decode_errors: int = 0
    last_error: av.FFmpegError | None = None

    def close(self) -> None:
        self.container.close()  # idempotent


def open_for_decoding(path: Openable, cfg: VideoConfig) -> OpenedVideo:
    """:func:`open_container`, with the decoder's threads set for a decoding pass, nothing demuxed yet."""
    container = open_container(path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threads: the decoder is the bottleneck
    if cfg.threads > 0:
        stream.codec_context.thread_count = cfg.threads
    return OpenedVideo(container, stream, container.demux(stream))


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def _stream_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _estimate_playable_frames(declared: int, duration: float, fps: float) -> int:
    """The container's frame count, unless it counts frames an edit list hides (more than duration*fps)."""
    from_duration = round(duration * fps) if duration > 0 and fps > 0 else 0
    if declared > 0 and (from_duration == 0 or declared <= from_duration * 1.05 + 1):
        return declared
    return from_duration


def probe_file(path: Openable, cfg: VideoConfig) -> VideoInfo:
    """Validate ``path`` (decoding up to its first frame) and describe it; nothing is left open."""
    if isinstance(path, StreamSource):
        check_stream(path)
    else:
        check_file(path)
    with open_container(path) as container:
        stream = container.streams.video[0]
        return _describe(path, cfg, OpenedVideo(container, stream, container.demux(stream)))


def probe_for_decoding(path: Openable, cfg: VideoConfig) -> tuple[VideoInfo, OpenedVideo]:
    """:func:`probe_file` that leaves the container open, demuxed up to the first frame, for the first
    decoding pass (the caller closes it, or hands it to :func:`~maskahand.video.pyav_backend.pyav_frames`).

    The decoder's threads are set before the first frame, as that pass sets them.
    """
    if isinstance(path, StreamSource):
        check_stream(path)
    else:
        check_file(path)
    opened = open_for_decoding(path, cfg)
    try:
        return _describe(path, cfg, opened), opened
    except BaseException:
        opened.close()
        raise


def _describe(path: Openable, cfg: VideoConfig, opened: OpenedVideo) -> VideoInfo:
    container, stream = opened.container, opened.stream
    fps = _stream_fps(stream)
    duration = _stream_duration(container, stream)
    first = _first_frame(path, opened)
    rotation = _display_rotation(path, first)
    width, height = (first.height, first.width) if rotation % 180 else (first.width, first.height)
    frame_width, frame_height = output_size(width, height, cfg.max_side)
    return VideoInfo(
        path=str(path) if isinstance(path, StreamSource) else path,
        kind="file",
        width=width,
        height=height,
        fps=fps,
        num_frames=_estimate_playable_frames(stream.frames, duration, fps),
        duration=duration,
        frame_width=frame_width,
        frame_height=frame_height,
        codec=stream.codec_context.name,
        rotation=rotation,
    )


def _display_rotation(path: Openable, frame: av.VideoFrame) -> int:
    """The display matrix's counter-clockwise rotation in quarter turns' degrees (0, 90, 180, 270)."""
    degrees = frame.rotation or 0
    if degrees % 90:
        logger.warning("%s: display rotation of %s degrees is not a quarter turn; ignored", path, degrees)
        return 0
    return int(degrees) % 360


def _first_frame(path: Openable, opened: OpenedVideo) -> av.VideoFrame:
    """Demux and decode up to the first frame; ``opened`` keeps that packet's frames and the counts."""
    packets = 0
    try:
        for packet in opened.packets:
            packets += 1
            opened.packets_read += packet.size > 0
            try:
                decoded = packet.decode()
            except av.FFmpegError as e:
                opened.decode_errors += 1
                opened.last_error = e
                continue
            if decoded:
                opened.decoded = list(decoded)
                return decoded[0]
    except av.FFmpegError as e:
        raise TruncatedVideoError(
            error_name(path), f"demuxing stopped after {packets} packets ({e.strerror or e})"
        ) from e
    last_error = opened.last_error
    detail = f"; last decoder error: {last_error.strerror or last_error}" if last_error else ""
    raise NoDecodableFramesError(error_name(path), f"0 frames decoded from {packets} packets{detail}")


def error_name(path: Openable) -> Path | str:
    """What an error names: the local path, or the URL / ``TAR#MEMBER``."""
    return str(path) if isinstance(path, StreamSource) else path
