"""Backend ``mediapipe``: MediaPipe Hands (0.10.14, models inside the wheel), CPU, no downloads.

Boxes come from the 21 hand landmarks, padded by ``box_padding`` of the box size per side so they
cover the whole hand as a detector box would (landmarks sit on joints, not on the skin outline).
MediaPipe cannot tell contact: every hand has state ``unknown`` and the handedness confidence as
score. One ``Hands`` graph is reused per detector; graphs are not thread-safe, so calls are serialised.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..core.config import DetectorConfig, MediapipeConfig
from ..core.native_log import native_stderr_to_debug
from .base import DetectorError, Hand, HandDetector

log = logging.getLogger(__name__)


def landmarks_to_box(
    xs: Sequence[float], ys: Sequence[float], width: int, height: int, padding: float
) -> tuple[float, float, float, float]:
    """Pixel box around normalized landmark coordinates, grown by ``padding`` per side, clipped."""
    x1, x2 = min(xs) * width, max(xs) * width
    y1, y2 = min(ys) * height, max(ys) * height
    pad_x, pad_y = (x2 - x1) * padding, (y2 - y1) * padding
    return (
        float(max(0.0, x1 - pad_x)),
        float(max(0.0, y1 - pad_y)),
        float(min(float(width), x2 + pad_x)),
        float(min(float(height), y2 + pad_y)),
    )


DETECTOR_BACKEND = {
    "name": "mediapipe",
    "help": "MediaPipe Hands (offline, no weights file; contact NOT judged)",
    "factory": "MediapipeDetector",
    "contact_judged": False,
}


class MediapipeDetector(HandDetector):
    name = "mediapipe"

    def __init__(self, cfg: DetectorConfig) -> None:
        try:
            with native_stderr_to_debug(log, "mediapipe"):
                # deferred: mediapipe at import
                import mediapipe as mp
                from mediapipe.python.solutions import hands as mp_hands
        except ImportError as e:
            raise DetectorError(
                "the mediapipe backend needs mediapipe==0.10.14 (pip install --no-deps mediapipe==0.10.14 "
                f"absl-py attrs flatbuffers 'protobuf<5' matplotlib): {e}"
            ) from e
        self.mcfg: MediapipeConfig = cfg.mediapipe
        self.batch_size = cfg.batch_size
        self.version = f"{mp.__version__}-c{self.mcfg.model_complexity}-pad{self.mcfg.box_padding:g}"
        self._lock = threading.Lock()
        # The graph's start-up (TF Lite, absl) prints from its own threads while it is built and first
        # runs: both happen here, on a blank frame, with that output captured (shown with -v).
        with native_stderr_to_debug(log, "mediapipe"):
            self._hands: Any = mp_hands.Hands(
                static_image_mode=True,
                max_num_hands=self.mcfg.max_num_hands,
                model_complexity=self.mcfg.model_complexity,
                min_detection_confidence=self.mcfg.min_detection_confidence,
                min_tracking_confidence=self.mcfg.min_tracking_confidence,
            )
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
                self._hands.process(np.zeros((64, 64, 3), np.uint8))

    def _detect_batch(
        self, frames: list[torch.Tensor], *, video_id: str | None, frame_indices: list[int] | None
    ) -> list[list[Hand]]:
        return [self._detect_one(f) for f in frames]

    def _detect_one(self, frame: torch.Tensor) -> list[Hand]:
        if self._hands is None:
            raise DetectorError("mediapipe detector was closed")
        image = np.ascontiguousarray(frame.permute(1, 2, 0).cpu().numpy())
        height, width = image.shape[:2]
        with self._lock, warnings.catch_warnings():
            # mediapipe 0.10.14 calls a deprecated protobuf API that warns on every frame
            warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
            result = self._hands.process(image)
        if not result.multi_hand_landmarks:
            return []
        hands = []
        for landmarks, handedness in zip(result.multi_hand_landmarks, result.multi_handedness):
            xs = [p.x for p in landmarks.landmark]
            ys = [p.y for p in landmarks.landmark]
            box = landmarks_to_box(xs, ys, width, height, self.mcfg.box_padding)
            if box[2] <= box[0] or box[3] <= box[1]:
                continue  # landmarks entirely outside the frame
            hands.append(Hand(box=box, state="unknown", score=float(handedness.classification[0].score)))
        return hands

    def close(self) -> None:
        with self._lock:
            if self._hands is not None:
                self._hands.close()
                self._hands = None
