"""The model behind the page: loaded once, one inference at a time on its device, a bounded queue.

Every request works in its own folder inside the server's private temp folder (mode 0700), removed when
the request ends; the server's folder is removed when it stops.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import EvalRecipe, ServeRecipe

log = logging.getLogger(__name__)
OVERLAY_TYPES = {"webm": "video/webm", "mp4": "video/mp4"}


class BusyError(RuntimeError):
    """Every place in the queue is taken."""


@dataclass
class GroundingResult:
    overlay: bytes  # the moving overlay, encoded as serve.overlay_format
    overlay_type: str  # its MIME type
    heatmap: bytes  # PNG: the summed map over the target image, at the image's size
    actions: list[tuple[str, float]] = field(default_factory=list)  # top actions (mean over clips)
    windows: int = 0
    seconds: float = 0.0  # inference and encoding, without the wait in the queue
    waited: float = 0.0  # seconds spent waiting for the device (another request was running)


class GroundingEngine:
    def __init__(self, predictor, recipe: ServeRecipe, top: int = 3) -> None:
        self.predictor = predictor
        self.recipe = recipe
        self.top = top
        self.root = Path(tempfile.mkdtemp(prefix="maskahand-serve-"))  # mkdtemp: mode 0700
        self._slot = threading.Lock()  # the device: one inference at a time
        self._count = threading.Lock()
        self._admitted = 0

    @property
    def waiting(self) -> int:
        return self._admitted

    @contextmanager
    def admit(self) -> Iterator[None]:
        """A place in the queue (the running request included), or :class:`BusyError`."""
        with self._count:
            if self._admitted >= self.recipe.serve.queue_size + 1:
                raise BusyError(
                    f"busy: {self._admitted} request(s) running or waiting; try again in a moment"
                )
            self._admitted += 1
        try:
            yield
        finally:
            with self._count:
                self._admitted -= 1

    @contextmanager
    def workdir(self) -> Iterator[Path]:
        """A fresh private folder for one request, removed afterwards whatever happens."""
        path = Path(tempfile.mkdtemp(prefix="request-", dir=self.root))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def ground(self, work: Path, video: Path, image: Path, title: str) -> GroundingResult:
        """The heatmap PNG and the overlay video of one pair; waits for the device."""
        # deferred: PIL, numpy, torch at import
        from ..evaluation.ground import ground_image, ground_video

        recipe = EvalRecipe(eval=self.recipe.eval, video=self.recipe.video)
        overlay = work / f"overlay.{self.recipe.serve.overlay_format}"
        asked = time.perf_counter()
        with self._slot:
            start = time.perf_counter()
            summed = ground_image(
                self.predictor, video, image, work / "heatmap.png", recipe, self.top, title=False
            )
            moving = ground_video(
                self.predictor, video, image, overlay, recipe, self.top, progress=False, title=title
            )
            seconds = time.perf_counter() - start
        return GroundingResult(
            overlay=overlay.read_bytes(),
            overlay_type=OVERLAY_TYPES[self.recipe.serve.overlay_format],
            heatmap=(work / "heatmap.png").read_bytes(),
            actions=summed["actions"],
            windows=len(moving["windows"]),
            seconds=seconds,
            waited=start - asked,
        )

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
