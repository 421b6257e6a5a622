"""``fit``: the training loop every recipe shares (see :mod:`maskahand.trainer.task` for the contract).

``train.batch_size`` is the global batch of one optimiser step, whatever the number of processes: each
process takes ``ctx.micro_batch`` samples per batch and accumulates ``accum_steps`` of them (see
:mod:`maskahand.trainer.batching`); the split is checked before anything is built and logged at the start. Checkpoints hold the full state,
so ``resume`` continues exactly where the checkpoint was written: same weights, same data, same
random draws (bit for bit on the CPU).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core import configbase
from ..core.configbase import ConfigError, save_config, to_dict
from ..runtime import distributed as D
from ..runtime.checkpoint_files import latest_checkpoint, list_checkpoints
from ..runtime.precision import Precision
from .batching import batch_split
from .checkpoint import (
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .logging import RunLogger
from .optim import build_optimizer
from .schedule import CosineSchedule
from .task import TrainContext, refuse_activation_checkpointing, to_device, unwrap

log = logging.getLogger("maskahand.trainer")

# For configs given as plain dicts (tools, tests): keys that may differ between a run and its
# resumption. Dataclass recipes use the fields marked RUNTIME in core/config.py instead.
RUNTIME_ONLY = frozenset(
    {
        "train.out_dir",
        "train.resume",
        "train.log_every",
        "train.ckpt_every",
        "train.keep_last",
        "train.keep_every",
        "train.image_every",
        "train.eval_every",
        "train.device",
        "train.max_nonfinite",
        "train.activation_checkpointing",
    }
)


class TrainingAborted(RuntimeError):
    """Training stopped on purpose (e.g. too many non-finite losses in a row); checkpoints are intact."""


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def config_changes(saved: dict, current: Any) -> list[str]:
    """``key: old -> new`` for every result-relevant difference between a checkpoint's config and ours."""
    if not isinstance(current, dict):
        return configbase.config_changes(saved, current)  # the RUNTIME-marked fields may change
    a, b = _flatten(saved), _flatten(current)
    keys = sorted(set(a) | set(b))
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if k not in RUNTIME_ONLY and a.get(k) != b.get(k)
    ]


def resolve_resume(resume: str | Path | bool | None, out_dir: Path) -> Path | None:
    """``None``/``False``: fresh (refused when the run folder already has checkpoints);
    ``True`` or ``"latest"``: the run folder's latest checkpoint (fresh when there is none);
    a path: that checkpoint."""
    if resume is None or resume is False:
        found = list_checkpoints(out_dir)
        if found:
            raise ConfigError(
                f"{out_dir} already holds checkpoints (latest {found[-1][1].name}): resume it with "
                "--resume, or pick a new --out"
            )
        return None
    if resume is True or str(resume) in ("latest", ""):
        return latest_checkpoint(out_dir)
    path = Path(resume)
    if not path.is_file():
        raise ConfigError(f"--resume {path}: no such checkpoint file")
    return path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class _Batches:
    """This rank's batches across epochs; every rank switches epoch together when any runs dry."""

    def __init__(self, task: Any, epoch: int, consumed: int, device: torch.device, world: int):
        self.task, self.epoch, self.consumed = task, epoch, consumed
        self.device, self.world = device, world
        self._it: Iterator[Any] = iter(task.train_batches(epoch, consumed))

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.consumed}

    def next(self) -> Any:
        empty_epochs = 0
        while True:
            try:
                batch, exhausted = next(self._it), 0.0
            except StopIteration:
                batch, exhausted = None, 1.0
            if self.world > 1:
                exhausted = D.all_reduce_max(exhausted)
            if not exhausted:
                self.consumed += 1
                return batch
            if self.consumed == 0:
                empty_epochs += 1
                if empty_epochs >= 2:
                    raise RuntimeError(
                        f"epoch {self.epoch}: the task yielded no batch on some rank (too little data for "
                        "train.batch_size's share per process x workers?)"
                    )
            self.epoch, self.consumed = self.epoch + 1, 0
            self._it = iter(self.task.train_batches(self.epoch, 0))


def fit(
    task: Any,
    optim: Any,
    train: Any,
    out_dir: str | Path,
    resume: str | Path | bool | None = None,
    config: Any = None,
    dist_info: D.DistInfo | None = None,
) -> Path:
    """Train ``task`` for ``train.max_iters`` optimiser steps; returns the final checkpoint's path.

    ``config``: the whole resolved recipe (dataclass or dict), written to ``config.yaml``, stored in
    every checkpoint and compared on resume (runtime-only keys may change, nothing else).
    """
    out_dir = Path(out_dir)
    info = dist_info or D.init_distributed(train.device, key="train.device")
    device, rank, world = info.device, info.rank, info.world_size
    prec = Precision(optim.precision, device)
    split = batch_split(train, world)  # a global batch that does not divide fails before anything starts
    accum = split.accum_steps
    cfg_dict = to_dict(config) if config is not None and not isinstance(config, dict) else (config or {})

    ckpt_path = resolve_resume(resume, out_dir) if info.is_main else None
    ckpt_path = D.broadcast_object(str(ckpt_path) if ckpt_path else None)
    state = load_checkpoint(ckpt_path) if ckpt_path else None
    if state is not None and cfg_dict:
        changed = config_changes(state.get("config") or {}, config)
        if changed:
            raise configbase.ConfigChangedError(
                f"{ckpt_path}: refusing to resume with a changed config: " + "; ".join(changed), changed
            )
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if config is not None:
            save_config(config, out_dir)
    D.barrier()

    ctx = TrainContext(
        dist=info, out_dir=out_dir, optim=optim, train=train, autocast_dtype=prec.dtype, split=split
    )
    if hasattr(task, "setup"):
        task.setup(ctx)
    seed_everything(train.seed)  # same initial weights on every rank
    model: nn.Module = task.build_model()
    model.train()
    if train.activation_checkpointing:
        _checkpoint_activations(task, model)
    model.to(device)
    groups = task.param_groups(model, optim)
    opt = build_optimizer(groups, optim, device)
    sched = CosineSchedule(opt, train.max_iters, optim.warmup_iters, optim.min_lr_factor)
    group_names = [g.get("name", f"group{i}") for i, g in enumerate(opt.param_groups)]

    start_step, position, nonfinite_total = 0, {"epoch": 0, "batch": 0}, 0
    seed_everything(train.seed * 1000 + rank)  # per-rank streams from here on
    if state is not None:
        unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        for g, base in zip(opt.param_groups, state.get("base_lrs", [])):
            g["base_lr"] = base
        sched.load_state_dict(state["schedule"])
        prec.load_state_dict(state["precision"])
        start_step, position = int(state["step"]), dict(state["data"])
        nonfinite_total = int(state.get("nonfinite", 0))
        rngs = state["rng"]
        if len(rngs) == world:
            set_rng_state(rngs[rank])
        elif info.is_main:
            log.warning(
                "checkpoint was written by %d processes, resuming on %d: RNG streams restart",
                len(rngs),
                world,
            )
        task_states = state.get("task")
        if hasattr(task, "load_state_dict") and isinstance(task_states, list):
            if len(task_states) == world and task_states[rank] is not None:
                task.load_state_dict(task_states[rank])
            elif info.is_main:
                log.warning(
                    "checkpoint holds the task state of %d processes, resuming on %d: not restored",
                    len(task_states),
                    world,
                )
        if info.is_main:
            log.info(
                "resumed from %s at step %d (epoch %d, batch %d)",
                ckpt_path,
                start_step,
                position["epoch"],
                position["batch"],
            )

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    global_batch = split.global_batch
    logger = RunLogger(out_dir, train.max_iters, start_step, enabled=info.is_main)
    logger.text(
        "training %d steps: %s%s; precision %s on %s",
        train.max_iters,
        split.describe(),
        f" (train.device_batch={train.device_batch} chose the accumulation)" if train.device_batch else "",
        prec.name,
        device,
    )
    params = [p for g in opt.param_groups for p in g["params"]]
    batches = _Batches(task, position["epoch"], position["batch"], device, world)
    last_ckpt: Path | None = Path(ckpt_path) if ckpt_path else None
    consecutive_bad = 0
    window = {"t": time.perf_counter(), "wait": 0.0, "samples": 0, "steps": 0}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def save(step_done: int) -> Path:
        rngs = D.all_gather_object(rng_state())
        task_states = D.all_gather_object(task.state_dict() if hasattr(task, "state_dict") else None)
        path = None
        if info.is_main:
            path = save_checkpoint(
                {
                    "model": unwrap(model).state_dict(),
                    "optimizer": opt.state_dict(),
                    "base_lrs": [g["base_lr"] for g in opt.param_groups],
                    "schedule": sched.state_dict(),
                    "precision": prec.state_dict(),
                    "rng": rngs,
                    "data": batches.position(),
                    "nonfinite": nonfinite_total,
                    "config": cfg_dict,
                    "task": task_states,  # one per rank, like "rng"
                },
                out_dir,
                step_done,
            )
            prune_checkpoints(out_dir, train.keep_last, train.keep_every)
        D.barrier()
        return Path(D.broadcast_object(str(path) if path else None))

    step = start_step
    last_batch: Any = None
    try:
        for step in range(start_step, train.max_iters):
            lr_f = sched.apply(step)
            task_f = task.lr_factor(step) if hasattr(task, "lr_factor") else 1.0
            if task_f != 1.0:
                for g in opt.param_groups:
                    g["lr"] *= task_f
                lr_f *= task_f
            opt.zero_grad(set_to_none=True)
            loss_sum, finite, samples = 0.0, True, 0
            scalars_sum: dict[str, float] = {}
            sources: set[str] = set()  # source videos of this step's batches on this rank
            for micro in range(accum):
                t0 = time.perf_counter()
                batch = batches.next()
                window["wait"] += time.perf_counter() - t0
                samples += task.batch_size(batch) if hasattr(task, "batch_size") else split.micro
                if hasattr(task, "batch_sources"):
                    sources.update(task.batch_sources(batch))
                batch = to_device(batch, device)
                last_micro = micro == accum - 1
                sync = net.no_sync() if world > 1 and not last_micro else contextlib.nullcontext()  # type: ignore[operator]
                with sync:
                    with prec.autocast():
                        loss, scalars = task.training_step(net, batch, step)
                    value = float(loss.detach().float())
                    finite = finite and math.isfinite(value)
                    prec.scaler.scale(loss / accum).backward()
                loss_sum += value
                for k, v in scalars.items():
                    scalars_sum[k] = scalars_sum.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
                last_batch = batch
            if world > 1:
                finite = D.all_reduce_max(0.0 if finite else 1.0) == 0.0
            if not finite:
                nonfinite_total += 1
                consecutive_bad += 1
                opt.zero_grad(set_to_none=True)
                logger.text("step %d: non-finite loss, update skipped (%d in a row)", step, consecutive_bad)
                if consecutive_bad >= train.max_nonfinite:
                    raise TrainingAborted(
                        f"step {step}: {consecutive_bad} non-finite losses in a row (train.max_nonfinite="
                        f"{train.max_nonfinite}); last good checkpoint: {last_ckpt or 'none'}"
                    )
                grad_norm = float("nan")
            else:
                consecutive_bad = 0
                prec.scaler.unscale_(opt)
                max_norm = optim.grad_clip if optim.grad_clip is not None else float("inf")
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
                prec.scaler.step(opt)
                prec.scaler.update()
            window["samples"] += samples * world
            window["steps"] += 1

            done = step + 1
            if done % train.log_every == 0 or done == train.max_iters or done == start_step + 1:
                loss_mean = D.all_reduce_mean(loss_sum / accum, None)
                elapsed = max(1e-9, time.perf_counter() - window["t"])
                values = {
                    "train/loss": loss_mean,
                    "train/grad_norm": grad_norm,
                    "train/samples_per_s": window["samples"] / elapsed,
                    "train/s_per_step": elapsed / window["steps"],
                    "train/data_wait_fraction": window["wait"] / elapsed,
                    "train/lr_factor": lr_f,
                    "train/nonfinite_total": float(nonfinite_total),
                    "train/global_batch": float(global_batch),
                    "train/micro_batch": float(split.micro),  # the split: per process per forward pass,
                    "train/processes": float(world),  # ... processes
                    "train/accum_steps": float(accum),  # ... and accumulation
                }
                if hasattr(task, "batch_sources"):  # distinct videos in the whole global batch
                    values["data/videos_per_batch"] = float(len(set().union(*D.all_gather_object(sources))))
                for name, g in zip(group_names, opt.param_groups):
                    values[f"lr/{name}"] = g["lr"]
                for k, v in scalars_sum.items():
                    values[f"train/{k}"] = v / accum
                if device.type == "cuda":
                    values["train/peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                logger.scalars(step, values)
                logger.progress(step, loss_mean, values["train/samples_per_s"])
                window = {"t": time.perf_counter(), "wait": 0.0, "samples": 0, "steps": 0}
            if train.image_every and info.is_main and (done % train.image_every == 0 or step == start_step):
                picture = (
                    task.visualize(unwrap(model), last_batch, step) if hasattr(task, "visualize") else None
                )
                if picture is not None:
                    logger.image("train/example", picture, step)
            if train.eval_every and done % train.eval_every == 0 and done != train.max_iters:
                _evaluate(task, model, step, logger)
            if done % train.ckpt_every == 0 and done != train.max_iters:
                last_ckpt = save(done)
        final = save(train.max_iters) if start_step < train.max_iters or last_ckpt is None else last_ckpt
        if hasattr(task, "evaluate"):
            _evaluate(task, model, train.max_iters - 1, logger)
        if info.is_main and hasattr(task, "export"):
            task.export(unwrap(model), out_dir)
        D.barrier()
        return final
    finally:
        logger.close()


def _checkpoint_activations(task: Any, model: nn.Module) -> None:
    """``train.activation_checkpointing``: the task knows which of its model's blocks to recompute."""
    hook = getattr(task, "enable_activation_checkpointing", None)
    if hook is None:  # a task written against the protocol only
        refuse_activation_checkpointing(task)
    hook(model)


def _evaluate(task: Any, model: nn.Module, step: int, logger: RunLogger) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            results = task.evaluate(unwrap(model), step) or {}
    finally:
        model.train(was_training)
    if results:
        logger.scalars(step, {f"eval/{k}": float(v) for k, v in results.items()})
        logger.text("step %d eval: %s", step + 1, ", ".join(f"{k}={v:.4f}" for k, v in results.items()))
