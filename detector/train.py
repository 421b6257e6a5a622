"""``maskahand detector train`` / ``eval``: the hircnn architecture on 100DOH VOC-format data.

Single process, or DDP when launched by torchrun (RANK/WORLD_SIZE/LOCAL_RANK in the environment):
``torchrun --nproc-per-node 8 -m maskahand.cli detector train --data VOC2007 ...``.
Checkpoints ``{model, optimizer, lr_scheduler, scaler, epoch, config}`` are written atomically to
``out_dir/checkpoint.pth`` (latest) and ``out_dir/model_<epoch>.pth``; ``train.resume`` continues.
The epoch loop is torchvision's reference; distribution (process group, all-reduce, gather, shutdown),
precision (``amp``: fp16 + GradScaler on CUDA) and file writing come from :mod:`maskahand.runtime`.
It is not ``trainer.fit``: its epochs, per-process batch, SGD + per-epoch MultiStepLR, epoch-seeded
randomness, checkpoint format, stop on a non-finite loss and per-epoch log all differ from the
engine's (README, detector section, lists them).
The ``model`` entry is the authors' layout, so any checkpoint loads as ``detector.hircnn.weights``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from ..core.config import DetectorTrainRecipe, HircnnConfig
from ..core.configbase import save_config, to_dict
from ..core.fsutil import append_jsonl, atomic_write_json
from ..runtime.atomic import save_torch_atomic
from ..runtime.distributed import all_reduce_mean, barrier, init_distributed, shutdown_distributed
from ..runtime.weights import load_torch_file
from .engine import amp_precision, gather_predictions, predict, train_one_epoch
from .evaluate import hand_metrics
from .hircnn import build_hircnn_model, load_coco_init, load_into, read_state_dict
from .voc import VOCHandDataset, collate

log = logging.getLogger(__name__)

BACKBONE_LAYERS = ["layer4", "layer3", "layer2", "layer1", "conv1"]


def setup_distributed(device_choice: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device); initialises the process group when torchrun set the environment."""

    info = init_distributed(device_choice, key="detector.device")
    return info.rank, info.world_size, info.device


def freeze_backbone_layers(model: Any, trainable: int) -> None:  # a torchvision FasterRCNN
    """Freeze the ResNet stages torchvision freezes for pretrained backbones (keep ``trainable`` last)."""
    train = BACKBONE_LAYERS[:trainable] + (["bn1"] if trainable == 5 else [])
    for name, param in model.backbone.body.named_parameters():
        if all(not name.startswith(layer) for layer in train):
            param.requires_grad_(False)


def freeze_backbone_batch_norm(model: Any) -> None:  # a torchvision FasterRCNN
    """BatchNorm2d of the ResNet body -> FrozenBatchNorm2d, as torchvision builds pretrained backbones."""

    for module in list(model.backbone.body.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, key).copy_(getattr(child, key).detach())
                setattr(module, name, frozen)


def _loader(dataset: VOCHandDataset, batch_size: int, workers: int, train: bool, distributed: bool):
    sampler: Any
    if distributed:
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=train)
    elif train:
        sampler = torch.utils.data.RandomSampler(dataset)
    else:
        sampler = torch.utils.data.SequentialSampler(dataset)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=False,
        persistent_workers=False,
    )


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) * 1_009 + rank


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    save_torch_atomic(state, path)


def _eval_cfg(hcfg: HircnnConfig, score_threshold: float) -> HircnnConfig:

    return replace(hcfg, score_threshold=score_threshold)


def evaluate_model(model: torch.nn.Module, loader, device: torch.device, amp: bool) -> dict[str, float]:
    ids, preds, gts = predict(model, loader, device, amp=amp)
    preds, gts = gather_predictions(ids, preds, gts)
    return hand_metrics(gts, preds)


def train(recipe: DetectorTrainRecipe) -> dict[str, Any]:
    """Train, evaluating on ``val_split`` after every ``eval_every`` epochs; returns the last log record."""
    tcfg, dcfg = recipe.train, recipe.detector
    if not tcfg.data_root:
        raise ValueError("train.data_root (or --data) must point at a 100DOH VOC root (Annotations/, ...)")
    rank, world, device = setup_distributed(dcfg.device)
    distributed = world > 1
    torch.manual_seed(tcfg.seed + rank)
    out_dir = Path(tcfg.out_dir)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(recipe, out_dir)

    train_set = VOCHandDataset(tcfg.data_root, tcfg.train_split, hflip=tcfg.hflip)
    train_loader = _loader(train_set, tcfg.batch_size, tcfg.workers, True, distributed)
    val_loader = None
    if tcfg.eval_every > 0:
        val_set = VOCHandDataset(tcfg.data_root, tcfg.val_split)
        val_loader = _loader(val_set, tcfg.batch_size, tcfg.workers, False, distributed)

    model = build_hircnn_model(
        _eval_cfg(dcfg.hircnn, tcfg.eval_score_threshold),
        box_batch_size_per_image=tcfg.box_batch_size_per_image,
        rpn_post_nms_top_n_train=tcfg.rpn_post_nms_top_n_train,
    )
    if tcfg.multiscale_min_sizes:
        # torchvision draws a training image's min side from this tuple and evaluates at its last entry
        model.transform.min_size = (*tcfg.multiscale_min_sizes, dcfg.hircnn.min_size)  # type: ignore[union-attr]
    if tcfg.coco_weights:
        load_coco_init(model, tcfg.coco_weights)
        freeze_backbone_layers(model, tcfg.trainable_backbone_layers)
        freeze_backbone_batch_norm(model)
    model.to(device)
    if distributed and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp_model = (
        torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.index is not None else None
        )
        if distributed
        else model
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=tcfg.lr_steps, gamma=tcfg.lr_gamma
    )
    precision = amp_precision(tcfg.amp, device)

    start_epoch = 0
    if tcfg.resume:
        ckpt = load_torch_file(tcfg.resume, "detector training checkpoint (train.resume)")
        for key in ("model", "optimizer", "lr_scheduler", "epoch"):
            if key not in ckpt:
                raise ValueError(f"{tcfg.resume}: not a training checkpoint (no '{key}'; train.resume)")
        load_into(model, ckpt["model"], f"checkpoint {tcfg.resume}")
        optimizer.load_state_dict(ckpt["optimizer"])
        lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        if ckpt.get("scaler"):
            precision.scaler.load_state_dict(ckpt["scaler"])
        start_epoch = int(ckpt["epoch"]) + 1
        log.info("resumed from %s at epoch %d", tcfg.resume, start_epoch)

    record: dict[str, Any] = {}
    for epoch in range(start_epoch, tcfg.epochs):
        # Every random draw of an epoch (batch order, flips, sizes, RPN/ROI sampling) follows from
        # (seed, rank, epoch) alone, so `--resume` at an epoch boundary repeats the uninterrupted run.
        torch.manual_seed(epoch_seed(tcfg.seed, rank, epoch))
        if distributed:
            train_loader.sampler.set_epoch(epoch)
        warmup = None
        if epoch == 0 and tcfg.warmup_iters > 0:
            iters = min(tcfg.warmup_iters, max(1, len(train_loader) - 1))
            warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=iters)
        t0 = time.time()
        losses = train_one_epoch(
            ddp_model,
            optimizer,
            train_loader,
            device,
            epoch,
            precision=precision,
            warmup=warmup,
            max_iters=tcfg.max_iters_per_epoch,
            print_freq=tcfg.print_freq,
        )
        lr_scheduler.step()
        loss_mean = all_reduce_mean(sum(losses) / max(1, len(losses)), device)
        record = {
            "epoch": epoch,
            "loss_mean": loss_mean,  # averaged over ranks; "losses" are rank 0's iterations
            "losses": losses,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.time() - t0,
        }
        if val_loader is not None and ((epoch + 1) % tcfg.eval_every == 0 or epoch + 1 == tcfg.epochs):
            record.update(evaluate_model(model, val_loader, device, tcfg.amp))
        if rank == 0:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": lr_scheduler.state_dict(),
                "scaler": precision.scaler.state_dict() if precision.scaler.is_enabled() else None,
                "epoch": epoch,
                "config": to_dict(recipe),
            }
            if tcfg.save_every > 0 and ((epoch + 1) % tcfg.save_every == 0 or epoch + 1 == tcfg.epochs):
                save_checkpoint(out_dir / f"model_{epoch}.pth", state)
            save_checkpoint(out_dir / "checkpoint.pth", state)
            append_jsonl(out_dir / "log.jsonl", record)
            log.info(
                "epoch %d: loss %.4f %s",
                epoch,
                record["loss_mean"],
                {k: round(v, 4) for k, v in record.items() if k.startswith("ap_")},
            )
    barrier()
    shutdown_distributed()
    return record


def evaluate_weights(
    recipe: DetectorTrainRecipe, weights: str, split: str, out_dir: str | Path
) -> dict[str, Any]:
    """AP@0.5 (hand, hand+state) of a weights file on one split; writes ``metrics.json`` to ``out_dir``."""
    tcfg, dcfg = recipe.train, recipe.detector
    if not tcfg.data_root:
        raise ValueError("train.data_root (or --data) must point at a 100DOH VOC root")
    rank, world, device = setup_distributed(dcfg.device)
    model = build_hircnn_model(_eval_cfg(dcfg.hircnn, tcfg.eval_score_threshold))
    load_into(model, read_state_dict(weights), f"weights {weights}")
    model.to(device)
    dataset = VOCHandDataset(tcfg.data_root, split)
    loader = _loader(dataset, tcfg.batch_size, tcfg.workers, False, world > 1)
    metrics: dict[str, Any] = evaluate_model(model, loader, device, tcfg.amp)
    metrics.update({"weights": str(weights), "split": split, "images": len(dataset)})
    if rank == 0:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_config(recipe, out)
        atomic_write_json(out / "metrics.json", metrics)
    shutdown_distributed()
    return metrics
