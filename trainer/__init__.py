"""maskahand.trainer: the one training engine every recipe (pretrain, finetune, hotspots) uses.

    from maskahand.trainer import TrainTask, TrainContext, fit
    final_checkpoint = fit(task, recipe.optim, recipe.train, out_dir, resume=None, config=recipe)

See :mod:`maskahand.trainer.task` for the contract a recipe implements. Modules, one job each:
``distributed`` (rank/world/device), ``precision`` (autocast, GradScaler), ``optim`` (AdamW groups),
``schedule`` (warmup + cosine), ``checkpoint`` (full state, atomic, retention, ``load_torch_file``),
``logging`` (progress, TensorBoard, log.jsonl), ``engine`` (``fit``). Names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainTask": "task",
    "TrainTaskProtocol": "task",
    "TrainContext": "task",
    "unwrap": "task",
    "to_device": "task",
    "step_generator": "task",
    "DistInfo": "distributed",
    "init_distributed": "distributed",
    "resolve_device": "distributed",
    "fit": "engine",
    "TrainingAborted": "engine",
    "load_torch_file": "checkpoint",
    "WeightsFileError": "checkpoint",
    "afformer_param_groups": "optim",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"maskahand.trainer.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'maskahand.trainer' has no attribute {name!r}")
