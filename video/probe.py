"""Open a video file with PyAV and turn every way it can be unreadable into a typed error."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Union

import av

from ..core.config import VideoConfig
from .container_check import stream_truncation_problem, truncation_problem
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


def check_file(path: Path) -> None:
    """Existence, size and readability of a video file, before any decoder sees it."""
    if not path.exists():
        raise VideoNotFoundError(path, "no such file or folder")
    if not path.is_file():
        raise NotAVideoError(path, "not a regular file")
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except PermissionError as e:
        raise VideoError(path, f"cannot read it ({e.strerror})") from e
    if size == 0:
        raise EmptyVideoError(path, "the file has 0 bytes")
    problem = truncation_problem(path)
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
    """Validate ``path`` (decoding up to its first frame) and describe it."""
    if isinstance(path, StreamSource):
        check_stream(path)
    else:
        check_file(path)
    with open_container(path) as container:
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        duration = _stream_duration(container, stream)
        first = _first_frame(path, container, stream)
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


def _first_frame(
    path: Openable, container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> av.VideoFrame:
    packets = 0
    last_error: av.FFmpegError | None = None
    try:
        for packet in container.demux(stream):
            packets += 1
            try:
                for frame in packet.decode():
                    return frame
            except av.FFmpegError as e:
                last_error = e
    except av.FFmpegError as e:
        raise TruncatedVideoError(
            error_name(path), f"demuxing stopped after {packets} packets ({e.strerror or e})"
        ) from e
    detail = f"; last decoder error: {last_error.strerror or last_error}" if last_error else ""
    raise NoDecodableFramesError(error_name(path), f"0 frames decoded from {packets} packets{detail}")


def error_name(path: Openable) -> Path | str:
    """What an error names: the local path, or the URL / ``TAR#MEMBER``."""
    return str(path) if isinstance(path, StreamSource) else path
