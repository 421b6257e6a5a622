"""Full training state on disk: atomic writes, retention, resume; and the one reader for weight files.

A training checkpoint is ``<run>/checkpoints/step_00001234.pt`` holding a dict::

    format, step, model, optimizer, schedule, precision, rng (one entry per rank),
    data (the data position), nonfinite, config (the resolved recipe), task (optional task state)

It is written to a temporary file, fsynced and renamed, so a kill at any moment leaves either the old
set of checkpoints or the new one. Retention keeps the last ``keep_last`` plus every step that is a
multiple of ``keep_every``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maskahand.runtime.atomic import save_torch_atomic

FORMAT = "maskahand-train-v1"
CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d{8,})\.pt$")


class WeightsFileError(ValueError):
    """A weights/checkpoint file is missing, unreadable or does not hold what it should."""


def load_torch_file(
    path: str | Path,
    what: str = "checkpoint",
    error: type[Exception] = WeightsFileError,
    weights_only: bool = True,
    safe_globals: Sequence[Any] = (),
    hint: str = "",
) -> Any:
    """Read a torch file on the CPU without running pickled code (``weights_only``).

    The one reader for weight and checkpoint files. Errors name the file and what it was meant to be
    (``what``: "backbone weights", "hircnn weights", ...), end with ``hint`` (e.g. which option to set)
    and are raised as ``error`` so each caller keeps its own exception type. ``safe_globals``: plain
    classes the file may hold besides tensors and containers (e.g. ``argparse.Namespace``).
    """
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    if not path.is_file():
        raise error(f"{path}: {what} file does not exist{tail}")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise error(f"{path}: cannot read {what} as a torch file ({e}){tail}") from e


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the finished training checkpoints in ``run_dir/checkpoints``, oldest first."""
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


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
