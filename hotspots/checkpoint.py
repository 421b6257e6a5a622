"""The authors' checkpoints: ``{"net": state_dict, "args": ..., "epoch": ...}`` from their ``train.py``.

Their tensor names (``FrameLSTM`` in their ``models/rnn.py``) map one to one onto ours:

    backbone.rnet.<resnet name>   -> backbone.<resnet name>
    rnn.<lstm tensor>             -> lstm.<lstm tensor>
    fc.weight / fc.bias           -> classifier.weight / classifier.bias
    project.0 / project.1         -> anticipation.0.conv / anticipation.0.bn
    project.3 / project.4         -> anticipation.1.conv / anticipation.1.bn
    h0, c0                        -> h0, c0

``load_checkpoint(path, num_verbs)`` builds the model and loads every tensor, or raises
:class:`~maskahand.runtime.weights.WeightsMismatchError` listing the missing, unexpected and mis-shaped
ones. Our own run checkpoints (``model`` key, our names) load too. ``num_batches_tracked`` counters may
be absent (they do not affect an eval-mode model); every other tensor must be there.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.config import HotspotsConfig
from ..runtime.weights import load_strict, load_torch_file, rename_by_prefix, unwrap_state_dict
from .model import HotspotsModel, uninitialised_model

log = logging.getLogger(__name__)

# (their prefix, our prefix); a prefix without a trailing dot names one tensor
_PREFIXES = (
    ("backbone.rnet.", "backbone."),
    ("rnn.", "lstm."),
    ("fc.", "classifier."),
    ("project.0.", "anticipation.0.conv."),
    ("project.1.", "anticipation.0.bn."),
    ("project.3.", "anticipation.1.conv."),
    ("project.4.", "anticipation.1.bn."),
    ("h0", "h0"),
    ("c0", "c0"),
)


def _swap(name: str, src: int) -> str | None:
    return rename_by_prefix(name, ((pair[src], pair[1 - src]) for pair in _PREFIXES))


def from_reference_name(theirs: str) -> str | None:
    """Our name for one of their tensors (None when it has no counterpart)."""
    return _swap(theirs, 0)


def to_reference_name(ours: str) -> str | None:
    return _swap(ours, 1)


def to_reference_state_dict(model: HotspotsModel) -> dict[str, torch.Tensor]:
    """Our model's tensors under their names: what their ``FrameLSTM.load_state_dict`` accepts."""
    out = {}
    for k, v in model.state_dict().items():
        name = to_reference_name(k)
        if name is None:
            raise KeyError(f"no reference name for {k}")
        out[name] = v
    return out


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside their ``{"net": ...}`` file, our ``{"model": ...}`` file or a plain state dict."""
    return extract_state(load_file(path), str(path))


def load_file(path: str | Path) -> Any:
    """The file's object, read without running pickled code (their ``args`` Namespace is allowed)."""
    return load_torch_file(path, "Hotspots checkpoint", safe_globals=[argparse.Namespace])


def extract_state(obj: Any, where: str) -> dict[str, torch.Tensor]:
    return unwrap_state_dict(obj, where, ("net", "model", "state_dict"), "module.", "a 'net' key")


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], where: str = "checkpoint") -> int:
    """Load their-named or our-named tensors into ``model``; raise listing every problem. Returns the count."""
    report = load_strict(
        model,
        state,
        where,
        "the Hotspots model",
        to_model=from_reference_name,
        to_file=lambda k: to_reference_name(k) or k,
    )
    return len(report.loaded)


def load_checkpoint(path: str | Path, num_verbs: int, cfg: HotspotsConfig | None = None) -> HotspotsModel:
    """Build a Hotspots model with ``num_verbs`` verbs and load their (or our) checkpoint into it.

    ``cfg`` sets the rest of the architecture (defaults: theirs); its ``backbone_weights`` is not read, as
    the checkpoint holds the backbone. The model is returned in eval mode.
    """
    cfg = replace(cfg or HotspotsConfig(), num_verbs=num_verbs)
    model = uninitialised_model(cfg)
    count = load_state(model, read_checkpoint(path), where=str(path))
    log.info("loaded %d tensors from %s", count, path)
    return model.eval()
