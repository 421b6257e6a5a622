"""Predictor: heatmap upsampler (two stride-2 transposed convs) and the action head."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ChannelLayerNorm


class HeatmapUpsampler(nn.Module):
    """(B, C, H, W) decoding -> (B, num_heatmaps, 4H, 4W) logits."""

    def __init__(self, dim: int, num_heatmaps: int):
        super().__init__()
        self.up1 = nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)
        self.norm = ChannelLayerNorm(dim // 2)
        self.act = nn.GELU()
        self.up2 = nn.ConvTranspose2d(dim // 2, num_heatmaps, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up2(self.act(self.norm(self.up1(x))))


class ActionHead(nn.Module):
    """1x1 conv, LayerNorm, GELU, global average pool, linear -> (B, num_actions) logits."""

    def __init__(self, dim: int, num_actions: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim // 2, 1, bias=False)
        self.norm = ChannelLayerNorm(dim // 2)
        self.act = nn.GELU()
        self.fc = nn.Linear(dim // 2, num_actions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.norm(self.conv(x))).mean(dim=(2, 3)))


class Predictor(nn.Module):
    def __init__(self, dim: int, num_heatmaps: int, num_actions: int):
        super().__init__()
        self.heatmap = HeatmapUpsampler(dim, num_heatmaps)
        self.action = ActionHead(dim, num_actions) if num_actions > 0 else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.heatmap(x), (self.action(x) if self.action is not None else None)
