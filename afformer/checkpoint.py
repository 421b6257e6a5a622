"""Name mapping between our Afformer and the authors' checkpoints, and loading them.

Our names differ from the authors' only by the prefixes in ``RENAMES`` (ours -> theirs); everything
below a renamed prefix is identical. The authors' Lightning checkpoints hold
``{"state_dict": {"network.<name>": tensor}}``; plain state dicts (with or without ``network.``) load too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

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


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not match the model (missing, unexpected or differently shaped)."""


def _rename(name: str, pairs: tuple[tuple[str, str], ...]) -> str:
    best = max((p for p in pairs if name.startswith(p[0])), key=lambda p: len(p[0]), default=None)
    return name if best is None else best[1] + name[len(best[0]) :]


def to_reference_name(ours: str) -> str:
    return _rename(ours, RENAMES)


def from_reference_name(theirs: str) -> str:
    return _rename(theirs, tuple((b, a) for a, b in RENAMES))


def to_reference_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our state dict under the authors' names (without the ``network.`` prefix)."""
    return {to_reference_name(k): v for k, v in model.state_dict().items()}


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # ours, absent from the checkpoint
    unexpected: list[str] = field(default_factory=list)  # the checkpoint's, with no tensor of ours
    shape_mismatch: list[str] = field(default_factory=list)  # "name: checkpoint (..) vs model (..)"
    # time tables shorter than the model's, loaded into its first rows (exact for the clips they covered)
    extended: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def describe(self, limit: int = 10) -> str:
        parts = [f"{len(self.loaded)} tensors loaded"]
        if self.extended:
            parts.append(f"time tables extended: {', '.join(self.extended)}")
        for label, items in (
            ("missing from the checkpoint", self.missing),
            ("unexpected in the checkpoint", self.unexpected),
            ("shape mismatches", self.shape_mismatch),
        ):
            if items:
                more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
        return "; ".join(parts)


def read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict, unwrapped from Lightning's ``state_dict`` and ``network.`` prefix."""
    if isinstance(source, Mapping):
        state, where = dict(source), "state dict"
    else:
        from maskahand.trainer.checkpoint import load_torch_file  # the one weights-file reader

        path = Path(source)
        state = load_torch_file(path, "checkpoint", error=CheckpointMismatchError)
        where = str(path)
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = dict(state["state_dict"])
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatchError(f"{where}: does not hold a state dict of tensors")
    if any(k.startswith(LIGHTNING_PREFIX) for k in state):
        state = {k[len(LIGHTNING_PREFIX) :]: v for k, v in state.items() if k.startswith(LIGHTNING_PREFIX)}
    return dict(state)


def load_reference_checkpoint(
    model: nn.Module, source: str | Path | Mapping[str, torch.Tensor], strict: bool = True
) -> LoadReport:
    """Load an authors' (or our own exported) checkpoint into ``model``.

    Keys may use the authors' names or ours. Raises :class:`CheckpointMismatchError` listing the
    missing, unexpected and differently shaped tensors unless ``strict=False``, in which case every
    matching tensor is loaded and the report says what was left out. A time table for shorter clips
    (e.g. 32-frame pretraining into a 64-frame model) fills the first rows of ours (``report.extended``).
    Image normalisation statistics stored on the 0..255 scale are converted to our [0, 1] inputs.
    """
    state = read_state_dict(source)
    ours = model.state_dict()
    report = LoadReport()
    picked: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        name = key if key in ours else from_reference_name(key)
        if name not in ours:
            report.unexpected.append(key)
        elif is_shorter_time_table(name, value, ours[name]):
            table = ours[name].clone()
            table[: value.shape[0]] = value
            picked[name] = table
            report.extended.append(f"{key}: {value.shape[0]} -> {table.shape[0]} rows")
        elif ours[name].shape != value.shape:
            report.shape_mismatch.append(
                f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(ours[name].shape)}"
            )
        else:
            picked[name] = value
    report.missing = [to_reference_name(k) for k in ours if k not in picked and not _has_mismatch(k, report)]
    report.loaded = sorted(picked)
    if not report.ok and strict:
        raise CheckpointMismatchError(f"checkpoint does not match the model: {report.describe()}")
    for stat in ("encoder.image_mean", "encoder.image_std"):
        if stat in picked and float(picked[stat].max()) > 1.0:
            picked[stat] = picked[stat] / 255.0
    model.load_state_dict(picked, strict=False)
    log.info("checkpoint: %s", report.describe())
    return report


def is_shorter_time_table(name: str, value: torch.Tensor, ours: torch.Tensor) -> bool:
    """A cross-attention time table for shorter clips: frame k of a T-frame clip uses row T-1-k, so its
    rows are our first rows and clips it covered give the same result; later rows keep the model's."""
    return (
        name.endswith("cross_attn.rel_pos_t")
        and value.dim() == ours.dim() == 2
        and value.shape[1] == ours.shape[1]
        and value.shape[0] < ours.shape[0]
    )


def _has_mismatch(name: str, report: LoadReport) -> bool:
    ref = to_reference_name(name)
    return any(m.split(":", 1)[0] in (name, ref) for m in report.shape_mismatch)
