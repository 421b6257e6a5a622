"""EPIC-style frame folders: ``frame_%010d.jpg`` files, possibly only every k-th frame.

A folder may also be a URL prefix (``s3://bucket/frames/P01/P01_01``): its listing gives the frame
numbers and each kept frame is one object read.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch

from ..core import storage
from ..core.config import VideoConfig
from .discover import FRAME_NAME
from .errors import EmptyVideoError, UnreadableFrameError, VideoError, VideoNotFoundError
from .records import DecodeStats, Frame, VideoInfo
from .sampling import FpsSampler, output_size, resize_uint8

FramePath = Path | str  # a local file, or the URL of an object


def frame_files(folder: Path | str) -> list[tuple[int, FramePath]]:
    """(frame number, file) of every ``frame_N.jpg`` in ``folder``, by frame number."""
    if isinstance(folder, str) and storage.is_url(folder):
        return _url_frame_files(folder)
    found: list[tuple[int, FramePath]] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = FRAME_NAME.match(entry.name)
                if match and entry.is_file():
                    found.append((int(match.group(1)), Path(entry.path)))
    except OSError as e:
        raise VideoError(folder, f"cannot list the frame folder ({e.strerror})") from e
    found.sort()
    return found


def _url_frame_files(folder: str) -> list[tuple[int, FramePath]]:
    return list(_listed_frames(folder))


@functools.lru_cache(maxsize=16)
def _listed_frames(folder: str) -> tuple[tuple[int, str], ...]:
    """One listing per frame-folder prefix and process: EPIC pairs many clips (entries) with one video's
    folder of tens of thousands of frames, and a dataset's frames do not change during a run."""
    found = []
    for url in storage.listdir(folder):
        match = FRAME_NAME.match(storage.name_of(url))
        if match:
            found.append((int(match.group(1)), url))
    return tuple(sorted(found))


def _decode(path: FramePath) -> torch.Tensor:
    # deferred: torchvision at import
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        if isinstance(path, str):  # a URL
            try:
                raw = storage.read_bytes(path)
            except FileNotFoundError as e:
                raise VideoNotFoundError(path, "the frame image is gone") from e
            return decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as e:
        raise UnreadableFrameError(path, f"cannot decode it as an image ({str(e).strip()[:200]})") from e


def probe_folder(folder: Path | str, cfg: VideoConfig) -> tuple[VideoInfo, list[tuple[int, FramePath]]]:
    url = isinstance(folder, str) and storage.is_url(folder)
    if not url and not Path(folder).exists():
        raise VideoNotFoundError(folder, "no such file or folder")
    files = frame_files(folder)
    if url and not files:
        raise VideoNotFoundError(folder, "no frame_*.jpg objects under this prefix")
    if not files:
        raise EmptyVideoError(folder, "the folder holds no frame_*.jpg files")
    first = _decode(files[0][1])
    height, width = first.shape[-2:]
    gaps = Counter(b[0] - a[0] for a, b in zip(files, files[1:]))
    step = gaps.most_common(1)[0][0] if gaps else 1
    frame_width, frame_height = output_size(int(width), int(height), cfg.max_side)
    info = VideoInfo(
        path=folder,
        kind="frames",
        width=int(width),
        height=int(height),
        fps=cfg.folder_fps / step,
        num_frames=len(files),
        duration=(files[-1][0] - files[0][0] + step) / cfg.folder_fps,
        frame_width=frame_width,
        frame_height=frame_height,
        codec="jpeg",
    )
    return info, files


def folder_frames(
    files: list[tuple[int, FramePath]], info: VideoInfo, cfg: VideoConfig, stats: DecodeStats
) -> Iterator[Frame]:
    """Frames of a folder at the target fps; pts from the file numbers ((n - first) / folder_fps)."""
    stats.backend_used = "jpeg"
    sampler = FpsSampler(cfg.fps, info.fps)
    first_number = files[0][0]
    for number, path in files:
        pts = (number - first_number) / cfg.folder_fps
        if not sampler.accept(pts):
            continue
        image = _decode(path)
        stats.frames_decoded += 1
        stats.frames_returned += 1
        yield Frame(image=resize_uint8(image, info.frame_width, info.frame_height), index=number, pts=pts)
