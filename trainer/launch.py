"""The body every training command shares: torch.distributed from torchrun's environment (or one process),
``fit``, shutdown. :class:`~maskahand.trainer.engine.TrainingAborted` propagates, so the CLI's
``run_handler`` reports it as a runtime failure (exit 1) with the step and the last good checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..runtime.distributed import init_distributed, shutdown_distributed
from .engine import fit
from .task import TrainTask


def run_training(make_task: Callable[[], TrainTask], recipe: Any, stage: str) -> Path | None:
    """Train ``make_task()`` with ``recipe.optim`` / ``recipe.train``; prints and returns the final checkpoint.

    The task is built after the process group exists, so it can read its rank and world size.
    """
    info = init_distributed(recipe.train.device, key="train.device")
    try:
        final = fit(
            make_task(),
            recipe.optim,
            recipe.train,
            recipe.train.out_dir,
            resume=recipe.train.resume,
            config=recipe,
            dist_info=info,
        )
    finally:
        shutdown_distributed()
    if info.is_main:
        print(f"{stage}: final checkpoint {final}")
    return final
