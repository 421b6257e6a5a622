"""Frame sizes of a mining run: decode once, detect at the detector's input size, store smaller.

The authors detect on full-resolution frames, and the 0.99 contact threshold sits close to the edge,
so detection must not see the stored (downscaled) frames. Per video:

- the **detection size** is what the detector itself works at: hircnn (torchvision's Faster R-CNN)
  resizes every image so its shorter side is ``min_size`` unless the longer side would pass
  ``max_size``, so frames larger than that are scaled down to exactly that size (the model would do
  it anyway) and smaller ones are given at full size (the model upsamples them itself); mediapipe
  works on the full frame (its palm model sees all of it, its landmark model crops each hand from it);
  precomputed detections ignore pixels (their boxes are normalized), so they get the stored frames.
  Each backend declares its rule (``detect_size`` in its ``DETECTOR_BACKEND``, ``maskahand.core.plugins``).
  ``mine.detect_max_side`` caps the longer side further;
- the **storage size** is the source scaled so its longer side is at most ``mine.frame_max_side``;
- the reader decodes once at the larger of the two and each copy is resized from that; boxes are
  mapped from detection pixels to stored pixels before the clip rule sees them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.config import DetectorConfig, MineConfig
from ..core.plugins import DETECTOR_BACKENDS
from ..video.sampling import output_size


@dataclass(frozen=True)
class FrameSizes:
    """(width, height) of the decoded, detected and stored copies of a video's frames."""

    decode: tuple[int, int]
    detect: tuple[int, int]
    store: tuple[int, int]
    decode_max_side: int | None  # the reader's max_side (None: the source size)

    def box_scale(self) -> tuple[float, float]:
        """Factors taking detection-frame pixels to stored-frame pixels (x, y)."""
        return self.store[0] / self.detect[0], self.store[1] / self.detect[1]


def detector_max_side(detector: DetectorConfig, width: int, height: int, storage_side: int) -> int | None:
    """The longer side the detector works at for a ``width`` x ``height`` source (None: full frame)."""
    backend = DETECTOR_BACKENDS.plugins().get(detector.backend)
    rule = backend.options["detect_size"] if backend else "full"
    if rule == "torchvision":
        h = detector.hircnn
        scale = min(h.min_size / min(width, height), h.max_size / max(width, height))
        return None if scale >= 1 else max(1, round(max(width, height) * scale))
    if rule == "stored":
        return storage_side
    if rule != "full":
        raise ValueError(
            f"detector backend {detector.backend!r}: detect_size {rule!r} is not full|stored|torchvision"
        )
    return None  # mediapipe (and any backend that resizes internally): the full frame


def frame_sizes(detector: DetectorConfig, mine: MineConfig, width: int, height: int) -> FrameSizes:
    """Sizes for a source of ``width`` x ``height`` (display orientation)."""
    longest = max(width, height)
    det_side = detector_max_side(detector, width, height, mine.frame_max_side)
    if mine.detect_max_side is not None:
        det_side = min(det_side or longest, mine.detect_max_side)
    det_side = None if det_side is None or det_side >= longest else det_side
    store_side = mine.frame_max_side if mine.frame_max_side < longest else None
    if det_side is None or store_side is None:
        decode_side = None
    else:
        decode_side = max(det_side, store_side)
    return FrameSizes(
        decode=output_size(width, height, decode_side),
        detect=output_size(width, height, det_side),
        store=output_size(width, height, store_side),
        decode_max_side=decode_side,
    )
