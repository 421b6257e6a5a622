"""The frame sampling rule and the output size rule shared by every backend."""

from __future__ import annotations

import math

import torch

# A frame whose pts is within this fraction of a sampling period before a multiple of 1/fps counts as
# reaching it: containers round timestamps (Matroska to 1 ms), so 30 fps frames sit at 0.033, 0.067 s.
PTS_TOLERANCE = 0.01


class FpsSampler:
    """Keep the first frame, then each first frame whose pts reaches the next multiple of 1/fps.

    At ``fps >= source_fps`` every frame is kept.
    """

    def __init__(self, fps: float, source_fps: float | None = None) -> None:
        self.fps = fps
        self.keep_all = source_fps is not None and source_fps > 0 and fps >= source_fps
        self._next_multiple = 0

    def accept(self, pts: float) -> bool:
        if self.keep_all:
            return True
        position = pts * self.fps
        if position < self._next_multiple - PTS_TOLERANCE:
            return False
        self._next_multiple = math.floor(position + PTS_TOLERANCE) + 1
        return True


def output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is at most ``max_side``, aspect kept."""
    longest = max(width, height)
    if max_side is None or longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_uint8(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 (3,H,W) or (B,3,H,W) images; no-op at the same size."""
    if image.shape[-1] == width and image.shape[-2] == height:
        return image
    batched = image.unsqueeze(0) if image.dim() == 3 else image
    out = torch.nn.functional.interpolate(
        batched.float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False
    )
    out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out[0] if image.dim() == 3 else out
