"""maskahand.trainer: the one training engine every recipe (pretrain, finetune, hotspots) uses.

    from maskahand.trainer import TrainTask, TrainContext, fit
    final_checkpoint = fit(task, recipe.optim, recipe.train, out_dir, resume=None, config=recipe)

See :mod:`maskahand.trainer.task` for the contract a recipe implements. Modules, one job each
(rank/world/device, precision and weights files live below, in :mod:`maskahand.runtime`): ``optim`` (AdamW
over the task's parameter groups), ``schedule`` (warmup + cosine), ``checkpoint`` (full state, atomic, retention),
``logging`` (progress, TensorBoard, log.jsonl), ``batching`` (the global batch's split over processes
and accumulation), ``engine`` (``fit``). Names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "TrainContext",
    "TrainTask",
    "TrainTaskProtocol",
    "TrainingAborted",
    "fit",
    "step_generator",
    "to_device",
    "unwrap",
]

if TYPE_CHECKING:  # the exports, as type checkers see them; loaded on first use (maskahand.core.lazy)
    from .engine import TrainingAborted, fit
    from .task import (
        TrainContext,
        TrainTask,
        TrainTaskProtocol,
        step_generator,
        to_device,
        unwrap,
    )
else:
    from ..core.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
