"""Activation checkpointing for Afformer: recompute encoder and decoder blocks during backward
(ViTDet: the trainable image blocks and the decoder's cross block; torch's checkpoint restores the RNG
state, so their stochastic depth draws the same masks when recomputed).

The forward of each ResNet bottleneck (encoder body) and of the shared decoder block is replaced, on
the instance, by one that runs under ``torch.utils.checkpoint``: parameter names, state dicts and
results do not change; only what is kept for backward does (block inputs instead of every
intermediate), at the price of a second forward of those blocks. Frozen batch norm and no dropout
make the recomputation exact.

The Afformer recipes (pretrain, finetune) apply it from their ``TrainTask.enable_activation_checkpointing``
when ``train.activation_checkpointing`` is set; the engine asks the task, never the model.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _checkpointed(module: nn.Module) -> None:
    if getattr(module, "_maskahand_ckpt", False):
        return
    inner = module.forward

    @functools.wraps(inner)
    def forward(*args, **kwargs):
        if torch.is_grad_enabled():
            return checkpoint(inner, *args, use_reentrant=False, **kwargs)
        return inner(*args, **kwargs)

    module.forward = forward
    module._maskahand_ckpt = True  # type: ignore[assignment]


def enable_activation_checkpointing(net: nn.Module) -> int:
    """Checkpoint Afformer's encoder bottlenecks and decoder block; returns how many modules changed.

    ``net``: the model itself (unwrap a DistributedDataParallel first)."""
    targets: list[nn.Module] = []
    body = getattr(getattr(net, "encoder", None), "body", None)
    if body is not None:
        for name in ("layer1", "layer2", "layer3", "layer4"):
            layer = getattr(body, name, None)
            if layer is not None:
                targets.extend(layer.children())
    # the ViTDet encoder: its trainable image blocks (the frozen trunk and video path keep no graph)
    targets.extend(getattr(getattr(net, "encoder", None), "image_blocks", None) or [])
    decoder = getattr(net, "decoder", None)
    block = getattr(decoder, "block", None) or getattr(decoder, "cross_block", None)
    if block is not None:
        targets.append(block)
    if not targets:
        raise ValueError(f"{type(net).__name__} has no encoder.body layers or decoder.block to checkpoint")
    for m in targets:
        _checkpointed(m)
    return len(targets)
