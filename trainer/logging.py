"""What a run shows: a progress bar, TensorBoard event files and ``log.jsonl`` with the same scalars.

Only the main rank writes. TensorBoard files live in the run folder itself
(``tensorboard --logdir RUN``); a resumed run purges events past its starting step, and
:func:`truncate_log` drops ``log.jsonl`` records past it, so both show one clean curve.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.fsutil import append_jsonl, atomic_write_text, read_jsonl

log = logging.getLogger("maskahand.trainer")

LOG_NAME = "log.jsonl"


def truncate_log(path: Path, before_step: int) -> None:
    """Keep only records with ``step < before_step`` (what a resumed run will not redo)."""
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if int(r.get("step", -1)) < before_step]
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


class RunLogger:
    """Progress bar + TensorBoard + JSON lines; every method is a no-op off the main rank."""

    def __init__(
        self, out_dir: Path, total_steps: int, start_step: int, enabled: bool, tensorboard: bool = True
    ):
        self.enabled = enabled
        self.out_dir = out_dir
        self.writer = None
        self.bar = None
        if not enabled:
            return
        truncate_log(out_dir / LOG_NAME, start_step)
        if tensorboard:
            try:
                # deferred: optional dependency
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(out_dir), purge_step=start_step or None)
            except ImportError as e:  # tensorboard is a pinned dependency; say so if it is missing
                log.warning("TensorBoard logging off (%s); log.jsonl is still written", e)
        # deferred: tqdm at import
        from tqdm import tqdm

        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
            disable=None,  # off when stderr is not a terminal ...
        )
        self._plain = self.bar.disable  # ... then a plain log line per log_every instead
        self._t0 = time.perf_counter()
        self._step0 = start_step
        self._total = total_steps

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        append_jsonl(self.out_dir / LOG_NAME, {"step": step, "time": round(time.time(), 3), **values})
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)
        if self._plain:
            done = step + 1 - self._step0
            rate = done / max(1e-9, time.perf_counter() - self._t0)
            eta = (self._total - step - 1) / max(rate, 1e-9)
            log.info(
                "step %d/%d loss %.4f  %.1f samples/s  eta %s",
                step + 1,
                self._total,
                values.get("train/loss", float("nan")),
                values.get("train/samples_per_s", 0.0),
                time.strftime("%H:%M:%S", time.gmtime(eta)),
            )

    def progress(self, step: int, loss: float, samples_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(step + 1 - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_s:.1f}", refresh=False)

    def image(self, tag: str, picture: np.ndarray, step: int) -> None:
        if self.enabled and self.writer is not None and picture is not None:
            self.writer.add_image(tag, np.ascontiguousarray(picture), step, dataformats="HWC")

    def text(self, msg: str, *args: Any) -> None:
        if self.enabled:
            log.info(msg, *args)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
