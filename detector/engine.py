"""Training and inference loops for the hircnn detector (torchvision detection-reference style)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sized

import torch

from ..runtime.distributed import all_gather_object, is_main
from ..runtime.precision import Precision
from .evaluate import ImageGroundTruth, ImagePrediction

log = logging.getLogger(__name__)


def amp_precision(amp: bool, device: torch.device) -> Precision:
    """The detector's ``amp`` switch as a trainer precision: fp16 autocast + GradScaler on CUDA, else fp32."""
    return Precision("fp16" if amp and device.type == "cuda" else "fp32", device)


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable,
    device: torch.device,
    epoch: int,
    *,
    precision: Precision | None = None,
    warmup: torch.optim.lr_scheduler.LRScheduler | None = None,
    max_iters: int | None = None,
    print_freq: int = 20,
) -> list[float]:
    """One pass over ``loader``; returns the total loss of every iteration (on this rank)."""
    # deferred: tqdm at import
    from tqdm import tqdm

    prec = precision or Precision("fp32", device)
    model.train()
    losses: list[float] = []
    total = len(loader) if isinstance(loader, Sized) else None
    if max_iters is not None:
        total = min(total, max_iters) if total is not None else max_iters
    bar = tqdm(total=total, desc=f"epoch {epoch}", disable=not is_main(), unit="it")
    start = time.time()
    for it, (images, targets) in enumerate(loader):
        if max_iters is not None and it >= max_iters:
            break
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device) for k, v in t.items() if k in ("boxes", "labels")} for t in targets]
        with prec.autocast():
            loss_dict = model(images, targets)
            loss = sum(loss_dict.values())
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at epoch {epoch} iteration {it}: {loss_dict}")
        optimizer.zero_grad(set_to_none=True)
        prec.scaler.scale(loss).backward()  # a disabled scaler (fp32, bf16) passes through
        prec.scaler.step(optimizer)
        prec.scaler.update()
        if warmup is not None:
            warmup.step()
        losses.append(value)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if is_main() and print_freq and it % print_freq == 0:
            parts = " ".join(f"{k}={v.item():.3f}" for k, v in loss_dict.items())
            log.info("epoch %d it %d loss %.4f %s (%.1f s)", epoch, it, value, parts, time.time() - start)
    bar.close()
    return losses


@torch.inference_mode()
def predict(
    model: torch.nn.Module, loader: Iterable, device: torch.device, amp: bool = True
) -> tuple[list[int], list[ImagePrediction], list[ImageGroundTruth]]:
    """Raw model outputs (before the deployment rule) with their ground truth, on this rank."""
    # deferred: tqdm at import
    from tqdm import tqdm

    model.eval()
    ids: list[int] = []
    preds: list[ImagePrediction] = []
    gts: list[ImageGroundTruth] = []
    prec = amp_precision(amp, device)
    for images, targets in tqdm(loader, desc="eval", disable=not is_main(), unit="batch"):
        images = [im.to(device, non_blocking=True) for im in images]
        with prec.autocast():
            outputs = model(images)
        for out, t in zip(outputs, targets):
            ids.append(int(t["image_id"]))
            preds.append(
                ImagePrediction(out["boxes"].float().cpu(), out["scores"].float().cpu(), out["labels"].cpu())
            )
            gts.append(ImageGroundTruth(t["boxes"], t["labels"], t.get("difficult")))
    return ids, preds, gts


def gather_predictions(
    ids: list[int], preds: list[ImagePrediction], gts: list[ImageGroundTruth]
) -> tuple[list[ImagePrediction], list[ImageGroundTruth]]:
    """All ranks' results, de-duplicated by image id (DistributedSampler pads with repeats)."""
    parts = all_gather_object(list(zip(ids, preds, gts)))  # [this rank's] without a process group
    merged = {i: (p, g) for part in parts for i, p, g in part}
    order = sorted(merged)
    return [merged[i][0] for i in order], [merged[i][1] for i in order]
