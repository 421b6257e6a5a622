"""Shared image/video encoder: torchvision's ``fasterrcnn_resnet50_fpn_v2`` ResNet-50 + FPN, frozen BN.

Only the pyramid levels a caller asks for are computed: the top-down path stops at the finest requested
level and output convolutions run only for requested levels (the video needs p3 alone, the image
p4..p2). The FPN keeps output convolutions for p2..p4 only (the authors' checkpoint has no p5 conv).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50
from torchvision.ops.misc import Conv2dNormActivation, FrozenBatchNorm2d

from ..runtime.weights import load_strict, load_torch_file, unwrap_state_dict

log = logging.getLogger(__name__)

LEVELS = ("p2", "p3", "p4")  # levels this encoder can produce (stride 4, 8, 16)
BODY_CHANNELS = (256, 512, 1024, 2048)  # c2..c5
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision detection defaults, for inputs in [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's detection fine-tuning convention: the first `trainable` of these stay trainable
TRAINABLE_ORDER = ("layer4", "layer3", "layer2", "layer1", "conv1")
BACKBONE_PREFIX = "backbone."  # where a torchvision detection checkpoint keeps body and FPN


def level_index(level: str) -> int:
    if level not in LEVELS:
        raise ValueError(f"unsupported pyramid level {level!r} (this encoder provides {list(LEVELS)})")
    return int(level[1]) - 2


class ResNetBody(nn.Module):
    """ResNet-50 stages conv1..layer4 with frozen batch norm; returns c2..c5."""

    def __init__(self) -> None:
        super().__init__()
        net = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]


class PyramidNeck(nn.Module):
    """FPN (torchvision v2 layout: conv + frozen norm, no bias) that computes requested levels only."""

    def __init__(self, out_channels: int = 256, num_outputs: int = len(LEVELS)) -> None:
        super().__init__()

        def conv(cin: int, k: int) -> Conv2dNormActivation:
            return Conv2dNormActivation(
                cin, out_channels, k, norm_layer=FrozenBatchNorm2d, activation_layer=None
            )

        self.inner_blocks = nn.ModuleList(conv(c, 1) for c in BODY_CHANNELS)
        self.layer_blocks = nn.ModuleList(conv(out_channels, 3) for _ in range(num_outputs))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)

    def forward(self, feats: list[torch.Tensor], levels: Iterable[str]) -> dict[str, torch.Tensor]:
        wanted = sorted({level_index(lv) for lv in levels})
        out: dict[str, torch.Tensor] = {}
        merged = self.inner_blocks[-1](feats[-1])
        for idx in range(len(feats) - 2, wanted[0] - 1, -1):
            lateral = self.inner_blocks[idx](feats[idx])
            merged = lateral + F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            if idx in wanted:
                out[LEVELS[idx]] = self.layer_blocks[idx](merged)
        return out


class Encoder(nn.Module):
    """Normalises images in [0, 1] (or uint8) and returns the requested FPN levels."""

    image_mean: torch.Tensor  # buffers, for type checkers
    image_std: torch.Tensor

    def __init__(self, with_fpn: bool = True, out_channels: int = 256) -> None:
        super().__init__()
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.body = ResNetBody()
        self.fpn = PyramidNeck(out_channels) if with_fpn else None

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        return (images - self.image_mean) / self.image_std

    def body_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.body(self.normalize(images))

    def pyramid(self, body_feats: list[torch.Tensor], levels: Iterable[str]) -> dict[str, torch.Tensor]:
        if self.fpn is None:
            raise RuntimeError("this encoder was built without an FPN")
        return self.fpn(body_feats, levels)

    def set_trainable(self, trainable_layers: int, freeze_all: bool = False) -> None:
        """torchvision convention: train the last ``trainable_layers`` ResNet stages (0..5)."""
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_backbone_layers must be in 0..5, got {trainable_layers}")
        train = TRAINABLE_ORDER[:trainable_layers]
        for name, p in self.body.named_parameters():
            p.requires_grad_(not freeze_all and name.startswith(train))
        if self.fpn is not None:
            for p in self.fpn.parameters():
                p.requires_grad_(not freeze_all)


def load_backbone_weights(encoder: Encoder, path: str | Path) -> None:
    """Load ResNet body + FPN tensors from a torchvision detection checkpoint (``backbone.*`` keys).

    Accepts a plain state dict or ``{"model": state_dict}`` (the torchvision reference scripts' format).
    Heads (RPN, ROI) and the p5 output conv are ignored; every body/FPN tensor of ours must be present.
    """
    state = unwrap_state_dict(load_torch_file(path, "backbone weights"), str(path), ("model",))
    ours = set(encoder.state_dict()) - {"image_mean", "image_std"}  # ours, not the detector's
    picked = {
        k[len(BACKBONE_PREFIX) :]: v
        for k, v in state.items()
        if k.startswith(BACKBONE_PREFIX) and k[len(BACKBONE_PREFIX) :] in ours
    }
    report = load_strict(
        encoder,
        picked,
        str(path),
        "the ResNet-50-FPN encoder",
        to_file=lambda k: BACKBONE_PREFIX + k,
        required=lambda k: k.startswith(("body.", "fpn.")),
        hint="expected a torchvision fasterrcnn_resnet50_fpn_v2 checkpoint",
    )
    log.info("loaded %d backbone tensors from %s", len(report.loaded), path)
