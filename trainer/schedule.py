"""Per-step learning rate: optional linear warmup, then cosine decay to ``min_lr_factor`` at ``max_iters``.

Matches the authors' ``CosineAnnealingLR(T_max=max_steps)`` (eta_min 0) when ``warmup_iters`` is 0.
The factor multiplies every group's ``base_lr``, so the encoder keeps its x 0.1.
"""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, max_iters: int, warmup_iters: int = 0, min_factor: float = 0.0) -> float:
    """Factor of the base lr used for optimiser step ``step`` (0-based)."""
    if warmup_iters > 0 and step < warmup_iters:
        return (step + 1) / warmup_iters
    span = max(1, max_iters - warmup_iters)
    progress = min(1.0, max(0.0, (step - warmup_iters) / span))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class CosineSchedule:
    """Sets each group's lr for a step; stateless apart from its settings (so resuming is trivial)."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, max_iters: int, warmup_iters: int = 0, min_factor: float = 0.0
    ):
        self.optimizer, self.max_iters = optimizer, max_iters
        self.warmup_iters, self.min_factor = warmup_iters, min_factor

    def apply(self, step: int) -> float:
        f = lr_factor(step, self.max_iters, self.warmup_iters, self.min_factor)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * f
        return f

    def state_dict(self) -> dict:
        return {"max_iters": self.max_iters, "warmup_iters": self.warmup_iters, "min_factor": self.min_factor}

    def load_state_dict(self, state: dict) -> None:
        self.max_iters = int(state["max_iters"])
        self.warmup_iters = int(state["warmup_iters"])
        self.min_factor = float(state["min_factor"])
