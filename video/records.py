"""What a reader yields: stream facts, single frames and batches of frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch


@dataclass(frozen=True)
class VideoInfo:
    """Facts about one video, known after opening it (no full decode).

    ``width``/``height`` are the source size; ``frame_width``/``frame_height`` the size of the frames
    the reader yields (after the ``max_side`` resize). ``num_frames`` is the playable frame count as
    the container reports it (an estimate for files: the exact count needs a full decode) and, for
    frame folders, the number of images present. Sizes are as displayed: a phone video stored landscape
    with a 90 degree display rotation reports (and yields) portrait frames. ``fps`` is the rate of those frames (for a folder
    holding every k-th frame: ``folder_fps / k``).
    """

    path: Path | str  # a local path, or a URL / ``TAR#MEMBER`` name for a streamed video
    kind: Literal["file", "frames"]
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    frame_width: int = 0
    frame_height: int = 0
    codec: str = ""
    rotation: int = (
        0  # degrees counter-clockwise applied to stored frames (display matrix); sizes are after it
    )


@dataclass
class Frame:
    image: torch.Tensor  # uint8 (3, H, W) RGB
    index: int  # source frame index (files: 0-based decoded frame; folders: number in the file name)
    pts: float  # seconds from the first playable frame


@dataclass
class FrameBatch:
    frames: torch.Tensor  # uint8 (B, 3, H, W) RGB
    indices: list[int]
    pts: list[float]

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class DecodeStats:
    """Counters a reader updates while it streams: evidence of lazy decoding, and decode errors."""

    packets_read: int = 0
    frames_decoded: int = 0
    frames_returned: int = 0
    decode_errors: int = 0
    backend_used: str = ""
