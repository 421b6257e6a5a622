"""Where a training run keeps its checkpoints and what marks one as ours.

A run folder holds ``<run>/checkpoints/step_00001234.pt``; each is a dict whose ``format`` is
:data:`FORMAT`. The trainer writes them (``maskahand.trainer.checkpoint``); whoever reads an exported
model or a run (evaluation, predictors, fine-tuning) finds and recognises them with these names alone.
"""

from __future__ import annotations

import re
from pathlib import Path

FORMAT = "maskahand-train-v1"
CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d{8,})\.pt$")


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
