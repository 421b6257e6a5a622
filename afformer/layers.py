"""Small building blocks: channel LayerNorms for conv feature maps, and the transformer MLP."""

from __future__ import annotations

import torch
from torch import nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over dim 1 of a (B, C, ...) map; ``spatial_dims`` sets the affine shape.

    The affine shape follows the authors' checkpoint: (C,) for 2D maps broadcast as (C, 1, 1), and
    (C, 1, 1, 1) stored as such for the 3D temporal pyramid.
    """

    def __init__(
        self, channels: int, spatial_dims: int = 2, stored_shape_full: bool = False, eps: float = 1e-6
    ):
        super().__init__()
        shape = (channels,) + (1,) * spatial_dims if stored_shape_full else (channels,)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.view_shape = (channels,) + (1,) * spatial_dims
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight.view(self.view_shape) + self.bias.view(self.view_shape)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
