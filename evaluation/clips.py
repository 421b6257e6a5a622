"""Media of one entry, loaded as the authors' evaluation loads it.

Clips (their ``UnevenVideoClips`` rule, ``configs/opra/r50fpn.yaml``): the video resampled to
``clip_fps`` (2), then windows of ``clip_length`` (32) frames every ``clip_stride`` (16); a video of at
most ``clip_length`` sampled frames is one clip; frames left after the last window (``n % stride`` of
them) form one more, shorter clip. Every clip is predicted and the predictions are summed.
Frames are read with :mod:`maskahand.video` (any container, any length; frame folders too) and,
like the target image, resized to ``image_size`` x ``image_size`` (bilinear, antialiased).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import IO

import torch

from ..core import storage
from ..core.config import EvalConfig, VideoConfig
from ..video import VideoReader, open_video
from ..video.folder import folder_frames, probe_folder
from ..video.sampling import resize_uint8

MediaPath = Path | str  # a local path, or an fsspec URL (images and video files are read from the store)


def clip_windows(n: int, length: int, stride: int) -> list[tuple[int, int]]:
    """[start, stop) windows over ``n`` sampled frames, the authors' rule (see the module docstring)."""
    if n <= 0:
        return []
    if n <= length:
        return [(0, n)]
    windows = [(s, s + length) for s in range(0, n - length + 1, stride)]
    remaining = n % stride
    if remaining:
        windows.append((n - remaining, n))
    return windows


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:

    return resize_uint8(images, size, size)


def read_image_bytes(path: MediaPath) -> bytes:
    """The bytes of an image file or object; a missing one raises FileNotFoundError naming it."""
    if storage.is_url(str(path)):
        try:
            return storage.read_bytes(str(path))
        except FileNotFoundError:  # storage.ObjectNotFoundError
            raise FileNotFoundError(f"image not found: {storage.redact(str(path))}") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    return path.read_bytes()


def open_image_file(path: MediaPath) -> IO[bytes]:
    """A binary file object of an image file or object (for PIL, which reads only the header for a size)."""
    if storage.is_url(str(path)):
        return storage.open_input(str(path))
    return open(path, "rb")


def load_image(path: MediaPath, size: int) -> torch.Tensor:
    """uint8 (3, size, size) RGB; errors name the file."""
    # deferred: torchvision at import
    from torchvision.io import ImageReadMode, decode_image

    raw = read_image_bytes(path)
    try:
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        image = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None
    return resize_square(image, size)


def load_clips(
    path: MediaPath,
    cfg: EvalConfig,
    video: VideoConfig | None = None,
    frame_range: tuple[int, int] | None = None,
) -> list[torch.Tensor]:
    """The clips of one video, each uint8 (T, 3, S, S); ``frame_range`` (first, last frame number, both
    inclusive) keeps only that part of a frame folder (an EPIC clip of a whole-video folder)."""

    vcfg = replace(video or VideoConfig(), fps=cfg.clip_fps, max_side=None)
    reader = open_video(path, vcfg) if frame_range is None else open_frame_range(path, frame_range, vcfg)
    frames = [resize_square(b.frames, cfg.image_size) for b in reader.batches(16)]
    if not frames:
        raise ValueError(f"{path}: no decodable frames")
    allf = torch.cat(frames)
    windows = clip_windows(len(allf), cfg.clip_length, cfg.clip_stride)
    if cfg.max_clips is not None and len(windows) > cfg.max_clips:
        # evenly spread over the video when capped
        pick = torch.linspace(0, len(windows) - 1, cfg.max_clips).round().long().tolist()
        windows = [windows[i] for i in pick]
    return [allf[a:b] for a, b in windows]


def clip_span(extra: dict) -> tuple[int, int] | None:
    """An entry's frame range (an EPIC clip: ``start_frame`` / ``stop_frame`` in ``Entry.extra``), or None."""
    return (extra["start_frame"], extra["stop_frame"]) if "start_frame" in extra else None


def open_frame_range(folder: MediaPath, frame_range: tuple[int, int], vcfg: VideoConfig):
    """A reader over the ``frame_N.jpg`` files of ``folder`` with first <= N <= last."""

    if isinstance(folder, Path) and folder.is_file():
        raise ValueError(f"{folder}: a frame range needs a frame folder")
    first, last = frame_range
    info, files = probe_folder(folder, vcfg)
    files = [(n, p) for n, p in files if first <= n <= last]
    if not files:
        raise ValueError(f"{folder}: no frame_*.jpg numbered {first}..{last}")
    return VideoReader(info, vcfg, lambda stats: folder_frames(files, info, vcfg, stats))


def load_frame_list(paths: list[MediaPath], size: int, max_frames: int = 64) -> torch.Tensor:
    """uint8 (T, 3, S, S) from image files, at most ``max_frames`` spread uniformly (AssistQ's rule)."""
    if len(paths) > max_frames:
        pick = torch.linspace(0, len(paths) - 1, max_frames).int().tolist()
        paths = [paths[i] for i in pick]
    return torch.stack([load_image(p, size) for p in paths])
