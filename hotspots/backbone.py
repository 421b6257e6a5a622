"""The frozen, dilated ImageNet ResNet-50 of Interaction Hotspots (seed 000 S5; their ``dr50_n28``).

res4 and res5 run at stride 1 with dilations 2 and 4, so a 224 x 224 image gives 2048 x 28 x 28 features
(stride 8). Their code sets the dilation on the first block of each of those stages only (the later
blocks keep dilation 1); ``dilation="first_block"`` reproduces that, ``"every_block"`` dilates every 3x3
convolution of the stage as the paper's text reads. The weights are torchvision's ImageNet ``resnet50``
state dict, read from a local file: nothing is downloaded. The backbone never trains: no parameter
requires a gradient and BatchNorm stays in eval mode whatever ``train()`` is called with.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..runtime.weights import load_strict, load_torch_file, unwrap_state_dict

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEAT_DIM = 2048
STRIDE = 8


def _dilate(stage: nn.Sequential, dilation: int, mode: Literal["first_block", "every_block"]) -> None:
    """Turn a stride-2 torchvision stage into a stride-1 dilated one, in place."""
    blocks: list[Any] = list(stage)  # torchvision Bottlenecks (nn.Module attributes are untyped)
    for i, block in enumerate(blocks):
        if i == 0:
            block.conv2.stride = (1, 1)
            block.downsample[0].stride = (1, 1)
        d = dilation if (i == 0 or mode == "every_block") else 1
        block.conv2.dilation = (d, d)
        block.conv2.padding = (d, d)


class DilatedResNet50(nn.Module):
    """ResNet-50 up to res5 (no pooling, no fc), stride 8, frozen. Input: normalised images (B,3,H,W)."""

    def __init__(self, dilation: Literal["first_block", "every_block"] = "first_block") -> None:
        super().__init__()
        # deferred: torchvision at import
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        _dilate(net.layer3, 2, dilation)
        _dilate(net.layer4, 4, dilation)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.dilation = dilation
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> DilatedResNet50:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def load_imagenet_weights(backbone: DilatedResNet50, path: str | Path) -> None:
    """Load torchvision's ImageNet ``resnet50`` state dict (``fc.*`` ignored; every other tensor required)."""
    obj = load_torch_file(
        path,
        "ImageNet weights",
        hint="save torchvision's ResNet50_Weights.IMAGENET1K_V1 state dict there, e.g. resnet50-0676ba61.pth",
    )
    state = unwrap_state_dict(obj, str(path), ("state_dict",), expected="a resnet50 state dict")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    load_strict(backbone, state, str(path), "a torchvision resnet50 state dict")
    log.info("loaded ImageNet resnet50 weights from %s", path)
