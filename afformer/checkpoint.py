"""Name mapping between our Afformer and the authors' checkpoints, and loading them.

Our names differ from the authors' only by the prefixes in ``RENAMES`` (ours -> theirs); everything
below a renamed prefix is identical. The authors' Lightning checkpoints hold
``{"state_dict": {"network.<name>": tensor}}``; plain state dicts (with or without ``network.``) load too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..runtime.weights import (
    LoadReport,
    load_strict,
    load_torch_file,
    rename_by_prefix,
    unwrap_state_dict,
)

log = logging.getLogger(__name__)

LIGHTNING_PREFIX = "network."

RENAMES: tuple[tuple[str, str], ...] = (
    ("encoder.body.", "encoder.backbone_with_fpn.body."),
    ("encoder.fpn.", "encoder.backbone_with_fpn.fpn."),
    ("decoder.temporal_pyramid.down1.", "decoder.v3ds.0."),
    ("decoder.temporal_pyramid.norm.", "decoder.v3ds.1."),
    ("decoder.temporal_pyramid.down2.", "decoder.v3ds.3."),
    ("decoder.level_embeds.", "decoder.image_level_embeds."),
    ("decoder.block.norm_self.", "decoder.self2d_cross3d_block.norm_self_q."),
    ("decoder.block.norm_cross_kv.", "decoder.self2d_cross3d_block.norm_cross_k."),
    ("decoder.block.", "decoder.self2d_cross3d_block."),
    # encoder=vitdet_b: the ViT keeps the authors' (detectron2's) names; their SimpleDecoder
    ("decoder.down.", "decoder.v3d."),
    ("decoder.cross_block.norm_kv.", "decoder.cross_block_3d.norm_k."),
    ("decoder.cross_block.norm_mlp.", "decoder.cross_block_3d.norm2."),
    ("decoder.cross_block.cross_attn.", "decoder.cross_block_3d.attn."),
    ("decoder.cross_block.", "decoder.cross_block_3d."),
    ("predictor.heatmap.up1.", "predictor.upsampler.0."),
    ("predictor.heatmap.norm.", "predictor.upsampler.1."),
    ("predictor.heatmap.up2.", "predictor.upsampler.3."),
    ("predictor.action.conv.", "predictor.actioner.0."),
    ("predictor.action.norm.", "predictor.actioner.1."),
    ("predictor.action.fc.", "predictor.actioner.5."),
)


def _rename(name: str, pairs: tuple[tuple[str, str], ...]) -> str:
    return rename_by_prefix(name, pairs) or name


def to_reference_name(ours: str) -> str:
    return _rename(ours, RENAMES)


def from_reference_name(theirs: str) -> str:
    return _rename(theirs, tuple((b, a) for a, b in RENAMES))


def to_reference_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our state dict under the authors' names (without the ``network.`` prefix)."""
    return {to_reference_name(k): v for k, v in model.state_dict().items()}


def read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict, unwrapped from Lightning's ``state_dict`` and ``network.`` prefix."""
    obj, where = (
        (source, "state dict") if isinstance(source, Mapping) else (load_torch_file(source), str(source))
    )
    return unwrap_state_dict(obj, where, ("state_dict",), LIGHTNING_PREFIX)


def load_reference_checkpoint(
    model: nn.Module, source: str | Path | Mapping[str, torch.Tensor], strict: bool = True
) -> LoadReport:
    """Load an authors' (or our own exported) checkpoint into ``model``.

    Keys may use the authors' names or ours. Raises :class:`~maskahand.runtime.weights.WeightsMismatchError`
    listing the missing, unexpected and differently shaped tensors unless ``strict=False``, in which case
    every matching tensor is loaded and the report says what was left out. A time table for shorter clips
    (e.g. 32-frame pretraining into a 64-frame model) fills the first rows of ours (``report.adapted``).
    Image normalisation statistics stored on the 0..255 scale are converted to our [0, 1] inputs.
    """
    where = "checkpoint" if isinstance(source, Mapping) else str(source)
    report = load_strict(
        model,
        read_state_dict(source),
        where,
        "the model",
        to_model=from_reference_name,
        to_file=to_reference_name,
        adapt=_adapt,
        strict=strict,
    )
    log.info("%s: %s", where, report.summary())
    return report


def _adapt(name: str, value: torch.Tensor, ours: torch.Tensor) -> tuple[torch.Tensor, str | None] | None:
    if is_shorter_time_table(name, value, ours):
        table = ours.clone()
        table[: value.shape[0]] = value
        return table, f"{to_reference_name(name)}: {value.shape[0]} -> {table.shape[0]} rows"
    if name in ("encoder.image_mean", "encoder.image_std") and float(value.max()) > 1.0:
        return value / 255.0, None  # stored on the 0..255 scale
    return None


def is_shorter_time_table(name: str, value: torch.Tensor, ours: torch.Tensor) -> bool:
    """A cross-attention time table for shorter clips: frame k of a T-frame clip uses row T-1-k, so its
    rows are our first rows and clips it covered give the same result; later rows keep the model's."""
    return (
        name.endswith("cross_attn.rel_pos_t")
        and value.dim() == ours.dim() == 2
        and value.shape[1] == ours.shape[1]
        and value.shape[0] < ours.shape[0]
    )
