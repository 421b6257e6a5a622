"""Interaction Hotspots on the shared trainer (:mod:`maskahand.trainer`).

Their optimiser is ``Adam(lr 1e-4, weight_decay 5e-4)``: weight decay added to the gradient (L2), not
decoupled. The engine runs AdamW; with the group's weight decay at 0 and ``wd/2 * ||theta||^2`` added to
the loss, AdamW's update is exactly Adam's with coupled L2 (the term's gradient is ``wd * theta``), so
``optim.weight_decay`` keeps their meaning. Their lr / 10 after epoch 15 is :meth:`HotspotsTask.lr_factor`
(the engine multiplies every group's lr by it each step; ``optim.min_lr_factor=1`` keeps the engine's cosine
flat). ``train.max_iters`` is set from ``data.epochs`` by the command.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ..core.config import HotspotsRecipe
from ..runtime.atomic import save_torch_atomic
from ..trainer.task import TrainContext, TrainTask, unwrap
from .checkpoint import to_reference_state_dict
from .data import (
    HotspotsSamples,
    TrainingSet,
    collate,
    epoch_order,
    steps_per_epoch,
)
from .intcam import intcam
from .model import HotspotsModel, build_model


class HotspotsTask(TrainTask):
    def __init__(self, recipe: HotspotsRecipe, tset: TrainingSet, model: nn.Module | None = None):
        self.recipe = recipe
        self.tset = tset
        self._model = model  # a pre-built model (tests); else build_model() reads the ImageNet file

    def setup(self, ctx: TrainContext) -> None:
        super().setup(ctx)
        self.steps_per_epoch = steps_per_epoch(len(self.tset.items), ctx.train.batch_size)

    def build_model(self) -> nn.Module:
        if self._model is not None:
            return self._model

        return build_model(self.recipe.model)

    def param_groups(self, model: nn.Module, optim: Any) -> list[dict]:
        params = [p for p in unwrap(model).parameters() if p.requires_grad]
        return [{"params": params, "lr": optim.lr, "weight_decay": 0.0, "name": "hotspots"}]

    def lr_factor(self, step: int) -> float:
        """Their MultiStepLR: ``decay_factor`` once ``decay_after`` epochs are done."""
        d = self.recipe.data
        return d.decay_factor if step // self.steps_per_epoch >= d.decay_after else 1.0

    def train_batches(self, epoch: int, skip: int) -> Iterable[Any]:
        ctx, d = self.ctx, self.recipe.data
        bs = ctx.micro_batch  # train.batch_size is the global batch
        order = epoch_order(self.tset, d, ctx.seed, epoch)[ctx.rank :: ctx.world_size]
        ds = HotspotsSamples(self.tset, d, self.recipe.model.max_len, seed=ctx.seed * 1000 + ctx.rank)
        ds.order, ds.epoch = order[skip * bs :], epoch
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=bs,
            shuffle=False,
            num_workers=ctx.train.workers,
            collate_fn=collate,
            persistent_workers=False,
        )
        yield from loader

    def training_step(
        self, model: nn.Module, batch: dict, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(
            batch["frames"],
            batch["lengths"],
            batch["verbs"],
            inactive=batch["inactive"],
            negative=batch.get("negative"),
        )
        wd = self.ctx.optim.weight_decay
        l2 = l2_penalty(unwrap(model), wd)
        scalars = {k: float(v.detach().mean()) for k, v in out.terms.items()}
        scalars["acc"] = float((out.logits.argmax(1) == batch["verbs"]).float().mean())
        if wd:
            scalars["l2"] = float(torch.as_tensor(l2).detach())
        return out.total + l2, scalars

    def visualize(self, model: nn.Module, batch: dict, step: int) -> np.ndarray | None:
        """The first inactive image beside its hotspot map for the true verb."""

        net = cast(HotspotsModel, unwrap(model))
        image = batch["inactive"][:1]
        verb = int(batch["verbs"][0])
        heat = intcam(net, image, verbs=[verb])[0, 0]
        heat = torch.nn.functional.interpolate(heat[None, None], size=image.shape[-2:], mode="bilinear")[0, 0]
        heat = (heat / heat.max().clamp_min(1e-12) * 255).to(torch.uint8).cpu()
        img = image[0].cpu()
        img = img if img.dtype == torch.uint8 else (img.clamp(0, 1) * 255).to(torch.uint8)
        overlay = torch.stack([heat, torch.zeros_like(heat), torch.zeros_like(heat)])
        return torch.cat([img, (img // 2 + overlay // 2)], 2).permute(1, 2, 0).numpy()

    def export(self, model: nn.Module, out_dir: Path) -> None:
        """``RUN/hotspots_model.pth`` in their format (``{"net": state_dict}``, their names): their code loads it."""

        net = cast(HotspotsModel, unwrap(model))
        save_torch_atomic(
            {
                "net": to_reference_state_dict(net),
                "verbs": list(self.tset.verbs),
                "epoch": self.recipe.data.epochs,
                "config": dataclasses.asdict(net.cfg),  # ours only; their loader ignores it
            },
            Path(out_dir) / "hotspots_model.pth",
        )


def l2_penalty(model: nn.Module, weight_decay: float) -> torch.Tensor | float:
    """``wd/2 * ||theta||^2`` over the trainable parameters: with AdamW at weight decay 0 this gives
    ``torch.optim.Adam(weight_decay=wd)``'s update (their optimiser)."""
    if not weight_decay:
        return 0.0
    return 0.5 * weight_decay * sum(p.pow(2).sum() for p in model.parameters() if p.requires_grad)
