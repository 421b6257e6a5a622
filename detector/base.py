"""The detector interface: ``Hand`` results and the ``HandDetector`` base every backend implements.

Kept free of heavy imports (torch is imported lazily) so ``maskahand.detector.cli`` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    import torch

HandState = Literal["contact", "no_contact", "unknown"]
Box = tuple[float, float, float, float]
HAND_STATES: tuple[str, ...] = ("contact", "no_contact", "unknown")


class DetectorError(RuntimeError):
    """A detector cannot be built or run (bad input file, missing dependency). Weights files raise
    ``maskahand.runtime.weights.WeightsFileError``."""


class DetectionsFileError(DetectorError):
    """A precomputed-detections file is missing, unsafe or malformed."""


@dataclass(frozen=True)
class Hand:
    """One detected hand: ``box`` is (x1, y1, x2, y2) in the pixels of the frame it was found in."""

    box: Box
    state: HandState
    score: float

    def __post_init__(self) -> None:
        if self.state not in HAND_STATES:
            raise ValueError(f"hand state must be one of {HAND_STATES}, got {self.state!r}")
        if len(self.box) != 4:
            raise ValueError(f"hand box must have 4 coordinates, got {self.box!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["box"] = [float(v) for v in self.box]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Hand:
        box = cast(Box, tuple(float(v) for v in d["box"]))  # its length is checked in __post_init__
        return cls(box=box, state=d["state"], score=float(d["score"]))


class HandDetector:
    """Base class: ``detect(frames)`` -> one ``list[Hand]`` per frame.

    ``frames`` is a uint8 RGB tensor (B, 3, H, W) or a list of (3, H, W) tensors of any sizes.
    Subclasses set ``name`` and ``version`` (recorded by the miner in every clip) and implement
    ``_detect_batch`` on a list of frames no longer than ``batch_size``.
    """

    name: str = "base"
    version: str = "0"
    batch_size: int = 1
    # True: the backend reads ``video_id`` (e.g. looks detections up by video), so a miner's batch that
    # holds frames of several videos is detected one video at a time; False: in one call, ``video_id=None``
    needs_video_id: bool = False

    def detect(
        self,
        frames: torch.Tensor | Sequence[torch.Tensor],
        *,
        video_id: str | None = None,
        frame_indices: Sequence[int] | None = None,
    ) -> list[list[Hand]]:
        frame_list = split_frames(frames)
        if frame_indices is not None and len(frame_indices) != len(frame_list):
            raise ValueError(f"got {len(frame_list)} frames but {len(frame_indices)} frame_indices")
        out: list[list[Hand]] = []
        step = max(1, int(self.batch_size))
        for start in range(0, len(frame_list), step):
            chunk = frame_list[start : start + step]
            idx = None if frame_indices is None else list(frame_indices[start : start + step])
            out.extend(self._detect_batch(chunk, video_id=video_id, frame_indices=idx))
        return out

    def _detect_batch(
        self, frames: list[torch.Tensor], *, video_id: str | None, frame_indices: list[int] | None
    ) -> list[list[Hand]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release backend resources (graphs, files). Safe to call twice."""

    def __enter__(self) -> HandDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


def split_frames(frames: Any) -> list[torch.Tensor]:
    """Validate ``frames`` and return them as a list of uint8 (3, H, W) tensors."""
    # deferred: torch at import
    import torch

    if isinstance(frames, torch.Tensor):
        if frames.ndim == 3:
            frames = frames.unsqueeze(0)
        if frames.ndim != 4:
            raise ValueError(f"frames must be (B, 3, H, W), got shape {tuple(frames.shape)}")
        frame_list = list(frames.unbind(0))
    else:
        frame_list = list(frames)
    for i, f in enumerate(frame_list):
        if not isinstance(f, torch.Tensor) or f.ndim != 3 or f.shape[0] != 3:
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"frame {i}: expected a (3, H, W) tensor, got {shape}")
        if f.dtype != torch.uint8:
            raise ValueError(f"frame {i}: expected uint8 RGB, got {f.dtype}")
    return frame_list


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes."""
    ix1, iy1 = max(a[0], b[0]), max(a[1], b[1])
    ix2, iy2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, ix2 - ix1) * max(0.0, iy2 - iy1)
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0
