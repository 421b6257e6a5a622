"""The contract between the engine (:func:`maskahand.trainer.fit`) and a recipe (pretrain, finetune, hotspots).

A recipe brings its data, its model and its evaluation; the engine brings everything else: process
group and device, precision, AdamW + schedule, gradient accumulation and clipping, DDP, checkpoints,
resume, the non-finite guard, progress, TensorBoard and ``log.jsonl``.

    from maskahand.trainer import TrainTask, TrainContext, fit

    class MyTask(TrainTask):
        def setup(self, ctx: TrainContext) -> None: ...          # optional: device, rank, world, seed
        def build_model(self) -> nn.Module: ...                 # fp32, on CPU: fit moves and wraps it
        def param_groups(self, model, optim) -> list[dict]: ... # AdamW groups (lr, weight decay)
        def enable_activation_checkpointing(self, model) -> None: ...  # optional: train.activation_checkpointing
        def train_batches(self, epoch: int, skip: int) -> Iterable[Batch]: ...
        def batch_size(self, batch) -> int: ...                 # samples in one batch (default: len(batch["key"]))
        def training_step(self, model, batch, step: int) -> tuple[Tensor, dict[str, float]]: ...
        def evaluate(self, model, step: int) -> dict[str, float]: ...              # optional
        def visualize(self, model, batch, step: int) -> np.ndarray | None: ...     # optional
        def export(self, model, out_dir: Path) -> None: ...                         # optional, main rank

    final_ckpt = fit(MyTask(...), recipe.optim, recipe.train, out_dir, resume=None, config=recipe)

Rules the engine relies on (read these before writing a task):

- ``train_batches(epoch, skip)`` yields THIS RANK's batches of one pass (an "epoch") over its data,
  starting after the first ``skip`` batches of that pass (a resumed run asks for the rest of the pass
  it was in). It must be deterministic in (seed, epoch, rank): shuffle with a generator seeded from
  them, never from global RNG state. Ranks may yield different numbers of batches: when any rank runs
  dry, every rank starts the next epoch together. An infinite iterator is fine too.
- Batches come from the iterator on the CPU; the engine moves every tensor in them (dicts, lists,
  tuples, dataclasses are walked) to ``ctx.device`` before ``training_step``.
- ``training_step`` runs under the engine's autocast and returns the loss to minimise (a scalar, the
  mean over this rank's batch) and float scalars to log (e.g. ``{"kld": ...}``). ``model`` is what the
  engine trains: possibly a ``DistributedDataParallel`` wrapper, so call ``model(...)`` for the forward
  pass and :func:`unwrap` for anything else (``unwrap(model).loss(...)``). Randomness inside the step
  (target drawing, augmentation) must come from a generator seeded from (seed, step, rank), e.g.
  :func:`step_generator`, so a resumed run draws the same.
- ``train.batch_size`` is the GLOBAL batch. Each batch ``train_batches`` yields holds
  ``ctx.micro_batch`` samples (global / (world x accumulation), see :mod:`maskahand.trainer.batching`).
- ``step`` counts optimiser steps from 0; with gradient accumulation one step sees
  ``ctx.batch.accum_steps`` batches per process (``training_step`` gets the same ``step`` for each of them).
- Optional ``batch_sources(batch) -> list[str]``: the source (video) of each sample; the engine logs
  ``data/videos_per_batch``, the distinct sources in each logged step's global batch.
- ``param_groups`` returns AdamW groups: dicts with ``params``, ``lr``, ``weight_decay`` and a
  ``name`` (used for the per-group lr in the logs). Every task states its own (the model's rules:
  Afformer's are :func:`maskahand.afformer.param_groups.afformer_param_groups`); there is no default. The engine's schedule scales every group's
  ``lr`` by the same factor, so relative factors (encoder x 0.1) stay.
- ``evaluate`` runs every ``train.eval_every`` steps on every rank (gather with
  :mod:`maskahand.runtime.distributed` yourself if needed); the engine logs what rank 0 returns.
  ``visualize`` runs on rank 0 every ``train.image_every`` steps and returns an (H, W, 3) uint8 picture.
- ``enable_activation_checkpointing(model)`` is called once, right after ``build_model``, when
  ``train.activation_checkpointing`` is set: the task makes its model recompute blocks in backward
  (Afformer: :mod:`maskahand.afformer.actckpt`). The default refuses the key with a ``ConfigError``.
- Optional ``state_dict()`` / ``load_state_dict(d)`` on the task: extra state of THIS RANK (e.g. where
  its data loader stands), saved in checkpoints for every rank and given back to the same rank on a
  resume with the same number of processes (otherwise not restored, with a warning).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ..core.configbase import ConfigError
from ..runtime.distributed import DistInfo
from .batching import BatchSplit, batch_split

if TYPE_CHECKING:
    from ..core.config import OptimConfig, TrainConfig


@dataclass(frozen=True)
class TrainContext:
    """What a task learns in ``setup`` before anything is built."""

    dist: DistInfo
    out_dir: Path
    optim: OptimConfig
    train: TrainConfig
    autocast_dtype: torch.dtype | None  # None: fp32
    split: BatchSplit | None = None  # the global batch's split (None: derived from train and world)

    @property
    def batch(self) -> BatchSplit:
        return self.split or batch_split(self.train, self.dist.world_size)

    @property
    def micro_batch(self) -> int:
        """Samples per batch that ``train_batches`` yields on this process (``train.batch_size`` is global)."""
        return self.batch.micro

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def world_size(self) -> int:
        return self.dist.world_size

    @property
    def seed(self) -> int:
        return self.train.seed


@runtime_checkable
class TrainTaskProtocol(Protocol):
    """The methods :func:`fit` needs; :class:`TrainTask` supplies defaults for the optional ones."""

    def build_model(self) -> nn.Module: ...

    def param_groups(self, model: nn.Module, optim: OptimConfig) -> list[dict]: ...

    def train_batches(self, epoch: int, skip: int) -> Iterable[Any]: ...

    def training_step(
        self, model: nn.Module, batch: Any, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


class TrainTask:
    """Base class of a recipe: subclass it and implement the methods that raise here."""

    ctx: TrainContext

    def setup(self, ctx: TrainContext) -> None:
        self.ctx = ctx

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def param_groups(self, model: nn.Module, optim: OptimConfig) -> list[dict]:
        """The task's AdamW groups: which parameters train at which lr and weight decay (its model's rules)."""
        raise NotImplementedError

    def enable_activation_checkpointing(self, model: nn.Module) -> None:
        """``train.activation_checkpointing=true``: make ``model`` (as built, fp32 on the CPU) recompute
        its blocks in backward. A task whose model cannot keeps this default, which refuses the key."""
        refuse_activation_checkpointing(self)

    def train_batches(self, epoch: int, skip: int) -> Iterable[Any]:
        raise NotImplementedError

    def lr_factor(self, step: int) -> float:
        """A recipe's own step schedule on top of the engine's cosine (e.g. Hotspots' lr / 10 after epoch 15)."""
        return 1.0

    def batch_size(self, batch: Any) -> int:
        if isinstance(batch, dict) and "key" in batch:
            return len(batch["key"])
        raise NotImplementedError("override batch_size() for batches without a 'key' list")

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        return {}

    def visualize(self, model: nn.Module, batch: Any, step: int) -> np.ndarray | None:
        return None

    def export(self, model: nn.Module, out_dir: Path) -> None:
        """Called on the main rank after the last step with the unwrapped model."""


def refuse_activation_checkpointing(task: Any) -> NoReturn:
    raise ConfigError(
        f"train.activation_checkpointing=true: {type(task).__name__} does not support activation "
        "checkpointing; set train.activation_checkpointing=false"
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or torch.compile) wrapper; the module itself otherwise."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


def to_device(obj: Any, device: torch.device) -> Any:
    """Every tensor in ``obj`` (dicts, lists, tuples, dataclasses walked) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_device(v, device) for v in obj]
    if isinstance(obj, tuple):
        return (
            type(obj)(*(to_device(v, device) for v in obj))
            if hasattr(obj, "_fields")
            else tuple(to_device(v, device) for v in obj)
        )
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(
            obj,
            **{f.name: to_device(getattr(obj, f.name), device) for f in dataclasses.fields(obj) if f.init},
        )
    return obj


def step_generator(
    seed: int, step: int, rank: int = 0, stream: int = 0, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A torch generator that depends only on (seed, step, rank, stream): what a resumed run redraws."""
    g = torch.Generator(device=device)
    # distinct, well-mixed 63-bit seeds for nearby tuples (SplitMix-style constants)
    mixed = (
        seed * 0x9E3779B97F4A7C15
        + step * 0xBF58476D1CE4E5B9
        + rank * 0x94D049BB133111EB
        + stream * 0x2545F4914F6CDD1D
    )
    g.manual_seed(mixed % (2**63 - 1))
    return g
