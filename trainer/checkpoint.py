"""Full training state on disk: atomic writes, retention, resume.

A training checkpoint is ``<run>/checkpoints/step_00001234.pt`` (names and ``FORMAT``:
``maskahand.runtime.checkpoint_files``) holding a dict::

    format, step, model, optimizer, schedule, precision, rng (one entry per rank),
    data (the data position), nonfinite, config (the resolved recipe), task (optional task state)

It is written to a temporary file, fsynced and renamed, so a kill at any moment leaves either the old
set of checkpoints or the new one. Retention keeps the last ``keep_last`` plus every step that is a
multiple of ``keep_every``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..runtime.atomic import save_torch_atomic
from ..runtime.checkpoint_files import CKPT_DIR, FORMAT, checkpoint_name, list_checkpoints
from ..runtime.weights import WeightsFileError, load_torch_file


def save_checkpoint(state: dict[str, Any], run_dir: str | Path, step: int) -> Path:
    """Write ``state`` atomically as ``checkpoints/step_<step>.pt`` and return its path."""
    return save_torch_atomic(
        {"format": FORMAT, "step": step, **state}, Path(run_dir) / CKPT_DIR / checkpoint_name(step)
    )


def prune_checkpoints(run_dir: str | Path, keep_last: int, keep_every: int = 0) -> list[Path]:
    """Delete checkpoints beyond the last ``keep_last`` except multiples of ``keep_every``; returns them."""
    found = list_checkpoints(run_dir)
    recent = {s for s, _ in found[-keep_last:]} if keep_last > 0 else set()
    removed = []
    for step, path in found:
        if step in recent or (keep_every > 0 and step % keep_every == 0):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    state = load_torch_file(path, "training checkpoint")
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        raise WeightsFileError(f"{path}: not a maskahand training checkpoint (format {FORMAT})")
    return dict(state)


# --------------------------------------------------------------------------------------------------
# RNG state: python, numpy, torch CPU and CUDA, in a form weights_only loading accepts


def rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state()  # the legacy tuple
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
