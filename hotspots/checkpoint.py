"""The authors' checkpoints: ``{"net": state_dict, "args": ..., "epoch": ...}`` from their ``train.py``.

Their tensor names (``FrameLSTM`` in their ``models/rnn.py``) map one to one onto ours:

    backbone.rnet.<resnet name>   -> backbone.<resnet name>
    rnn.<lstm tensor>             -> lstm.<lstm tensor>
    fc.weight / fc.bias           -> classifier.weight / classifier.bias
    project.0 / project.1         -> anticipation.0.conv / anticipation.0.bn
    project.3 / project.4         -> anticipation.1.conv / anticipation.1.bn
    h0, c0                        -> h0, c0

``load_checkpoint(path, num_verbs)`` builds the model and loads every tensor, or raises
:class:`CheckpointMismatchError` listing the missing, unexpected and mis-shaped ones. Our own run
checkpoints (``model`` key, our names) load too. ``num_batches_tracked`` counters may be absent (they do not
affect an eval-mode model); every other tensor must be there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from maskahand.config import HotspotsConfig
from maskahand.hotspots.model import HotspotsModel, uninitialised_model

log = logging.getLogger(__name__)

# (their prefix, our prefix), most specific first
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


class CheckpointMismatchError(RuntimeError):
    """The checkpoint file is unreadable or its tensors do not match the model."""


def _swap(name: str, src: int) -> str | None:
    for pair in _PREFIXES:
        a, b = pair[src], pair[1 - src]
        if name == a or (a.endswith(".") and name.startswith(a)):
            return b + name[len(a) :]
    return None


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


def load_file(path: str | Path):
    """The file's object, read without running pickled code (their ``args`` Namespace is allowed)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointMismatchError(f"{path}: checkpoint file does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - their files pickle argparse.Namespace under "args"
        return _load_with_namespace(path)


def extract_state(obj, where: str) -> dict[str, torch.Tensor]:
    state = obj
    for key in ("net", "model", "state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise CheckpointMismatchError(
            f"{where}: does not hold a state dict of tensors (expected a 'net' key)"
        )
    if all(k.startswith("module.") for k in state):  # saved from an nn.DataParallel wrapper
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _load_with_namespace(path: Path):
    import argparse

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointMismatchError(f"{path}: cannot read as a torch checkpoint: {e}") from e


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], where: str = "checkpoint") -> int:
    """Load their-named or our-named tensors into ``model``; raise listing every problem. Returns the count."""
    ours = model.state_dict()
    picked: dict[str, torch.Tensor] = {}
    unexpected, shapes = [], []
    for key, value in state.items():
        name = key if key in ours else from_reference_name(key)
        if name is None or name not in ours:
            unexpected.append(key)
        elif tuple(ours[name].shape) != tuple(value.shape):
            shapes.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(ours[name].shape)}")
        else:
            picked[name] = value
    mis_shaped = {s.split(":", 1)[0] for s in shapes}
    missing = [
        to_reference_name(k) or k
        for k in ours
        if k not in picked
        and not k.endswith("num_batches_tracked")
        and k not in mis_shaped
        and to_reference_name(k) not in mis_shaped
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
            if items:
                more = f" (+{len(items) - 12} more)" if len(items) > 12 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:12])}{more}")
        raise CheckpointMismatchError(f"{where} does not match the Hotspots model: {'; '.join(parts)}")
    model.load_state_dict(picked, strict=False)
    return len(picked)


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
