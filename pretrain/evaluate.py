"""Pretext evaluation and pictures: KL on held-out MaskAHand shards, the Center Bias baseline,
the TensorBoard picture, and the export in the authors' checkpoint layout."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..afformer.checkpoint import LIGHTNING_PREFIX, to_reference_state_dict
from ..afformer.loss import heatmap_kl
from ..core.config import PretrainRecipe
from ..shards import maskahand_dataset
from .data import pad_collate, uniform_indices
from .task import resize_heatmaps, resize_square


def authors_state_dict(model: nn.Module) -> dict[str, Any]:
    """``{"state_dict": {"network.<authors' name>": tensor}}``: what the authors' Lightning code loads."""
    return {
        "state_dict": {
            LIGHTNING_PREFIX + k: v.detach().cpu() for k, v in to_reference_state_dict(model).items()
        }
    }


def held_out_batches(
    shards: Any, recipe: PretrainRecipe, batch_size: int = 4, max_samples: int | None = None
):
    """Every (sample, target) of ``shards`` in order, batched: frames trimmed to ``train.num_frames``."""

    size = recipe.model.image_size
    buf: list[Any] = []
    ds = maskahand_dataset(shards, shuffle=0, rank=0, world_size=1)
    for seen, sample in enumerate(ds, start=1):
        frames = sample.frames[uniform_indices(sample.frames.shape[0], recipe.train.num_frames)]
        sample.frames = resize_square(frames, size)
        buf.append(sample)
        last = max_samples is not None and seen >= max_samples
        if len(buf) == batch_size or last:
            yield _flatten_targets(pad_collate(buf), size, resize_square, resize_heatmaps)
            buf = []
        if last:
            return
    if buf:
        yield _flatten_targets(pad_collate(buf), size, resize_square, resize_heatmaps)


def _flatten_targets(
    batch: dict[str, Any], size: int, resize_square: Any, resize_heatmaps: Any
) -> dict[str, Any]:
    """One row per (sample, target): the clip repeated K times."""
    b, k = batch["targets"].shape[:2]
    frames = batch["frames"].repeat_interleave(k, dim=0)
    targets = resize_square(batch["targets"].flatten(0, 1), size)
    heatmaps = resize_heatmaps(batch["heatmaps"].flatten(0, 1)[:, None], size)
    return {
        "frames": frames,
        "num_frames": batch["num_frames"].repeat_interleave(k),
        "targets": targets,
        "heatmaps": heatmaps,
    }


@torch.no_grad()
def pretext_kld(
    model: nn.Module,
    shards: Any,
    recipe: PretrainRecipe,
    device: torch.device,
    max_samples: int | None = None,
    batch_size: int = 4,
) -> float:
    """Mean KL(g || softmax(model)) over every target of every held-out sample."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in held_out_batches(shards, recipe, batch_size, max_samples):
            out = model(
                batch["frames"].to(device), batch["targets"].to(device), batch["num_frames"].to(device)
            )
            kl, valid = heatmap_kl(out.heatmap_logits.float(), batch["heatmaps"].to(device))
            total += float((kl * valid).sum())
            count += int(valid.sum())
    finally:
        model.train(was)
    if count == 0:
        raise ValueError(f"no held-out target with a non-empty heatmap in {shards}")
    return total / count


def center_gaussian(size: int, sigma_frac: float) -> torch.Tensor:
    """(size, size) isotropic Gaussian at the image centre, sigma = sigma_frac x size, summing to 1."""
    c = (size - 1) / 2
    y, x = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij"
    )
    g = torch.exp(-((x - c) ** 2 + (y - c) ** 2) / (2 * (sigma_frac * size) ** 2))
    return (g / g.sum()).float()


@torch.no_grad()
def center_bias_kld(
    shards: Any,
    recipe: PretrainRecipe,
    sigmas: tuple[float, ...] = (0.1, 0.15, 0.2, 0.3, 0.4, 0.6),
    max_samples: int | None = None,
) -> tuple[float, float]:
    """The Center Bias baseline's KL on ``shards``: the best of a few centred Gaussians (its most
    favourable setting, chosen on the same data). Returns (KL, sigma as a fraction of the side)."""
    size = recipe.model.image_size
    logs = {s: torch.log(center_gaussian(size, s).clamp_min(1e-30)) for s in sigmas}
    totals = dict.fromkeys(sigmas, 0.0)
    count = 0
    for batch in held_out_batches(shards, recipe, max_samples=max_samples):
        g = batch["heatmaps"]
        for s, log_q in logs.items():
            # heatmap_kl applies log_softmax: log of a normalised map is its own log_softmax
            kl, valid = heatmap_kl(log_q.expand_as(g).contiguous(), g)
            totals[s] += float((kl * valid).sum())
        count += int(valid.sum())
    if count == 0:
        raise ValueError(f"no held-out target with a non-empty heatmap in {shards}")
    best = min(sigmas, key=lambda s: totals[s])
    return totals[best] / count, best


def _heat_rgb(heat: torch.Tensor) -> torch.Tensor:
    """(H, W) heatmap -> (H, W, 3) float colours in [0, 1] (matplotlib's jet), scaled to its max."""
    # deferred: matplotlib at import
    import matplotlib

    h = heat.float().cpu()
    h = h / h.max().clamp_min(1e-12)
    lut = torch.tensor(matplotlib.colormaps["jet"](np.linspace(0, 1, 256))[:, :3], dtype=torch.float32)
    return lut[(h * 255).round().long().clamp(0, 255)]


def overlay_row(
    frame: torch.Tensor, target: torch.Tensor, pred: torch.Tensor, gt: torch.Tensor
) -> np.ndarray:
    """(S, 4S, 3) uint8: video frame | target | target + predicted heatmap | target + ground truth."""
    size = target.shape[-1]
    frame = frame.cpu()
    if frame.shape[-2:] != target.shape[-2:]:
        frame = torch.nn.functional.interpolate(frame[None].float(), size=target.shape[-2:], mode="bilinear")[
            0
        ]
    img = target.cpu().float().permute(1, 2, 0) / 255.0
    cells = [
        frame.float().permute(1, 2, 0) / 255.0,
        img,
        0.5 * img + 0.5 * _heat_rgb(pred),
        0.5 * img + 0.5 * _heat_rgb(gt),
    ]
    row = torch.cat([c[:size, :size] for c in cells], dim=1)
    return (row.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
