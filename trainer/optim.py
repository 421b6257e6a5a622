"""The optimiser the engine builds from a task's parameter groups (:meth:`TrainTask.param_groups`).

Which parameters go together, at which lr and weight decay, is the task's (the model's) business:
Afformer's groups are :mod:`maskahand.afformer.param_groups`, Hotspots' are in its task. The engine
only builds AdamW over them and remembers each group's starting lr for the schedule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..core.config import OptimConfig


def build_optimizer(groups: list[dict], optim: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``groups``; each group's starting lr is remembered as ``base_lr`` for the schedule."""
    if not groups or not any(g["params"] for g in groups):
        raise ValueError("no trainable parameters: every parameter group is empty")
    for g in groups:
        g.setdefault("base_lr", g["lr"])
    # fused kernels only where they exist and are well tested (CUDA); foreach elsewhere
    return torch.optim.AdamW(
        groups,
        lr=optim.lr,
        betas=(float(optim.betas[0]), float(optim.betas[1])),
        weight_decay=optim.weight_decay,
        fused=device.type == "cuda",
    )
