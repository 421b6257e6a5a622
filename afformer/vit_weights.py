"""ViT encoder weights from a path, in the three layouts a ViTDet-B Afformer is initialised from:

- detectron2's ViTDet COCO checkpoint (``model_final_61ccd1.pkl`` for ViTDet-B Mask R-CNN): a pickle of
  ``{"model": {name: numpy array}, ...}``, read with an unpickler that resolves nothing but numpy's array
  reconstruction (no code can run); the ViT lives under ``backbone.net.``, everything else (the simple
  feature pyramid, RPN, ROI heads) is not part of the Afformer encoder and is counted as skipped;
- MAE's ImageNet ViT-B (``mae_pretrain_vit_base.pth``, timm names, ``{"model": state_dict}``): it has no
  relative-position tables (ViTDet starts them at zero, as here) and its class token and final norm
  have no place in ViTDet;
- the authors' Afformer checkpoint (Lightning ``state_dict`` with ``network.encoder.*``): its encoder part.

The plain ViT's block ``i`` goes to ``shared_blocks.i`` or, for the last ``trainable`` blocks, to both
``video_blocks`` and ``image_blocks`` (the authors deep-copy them). Every encoder tensor must be found
with its shape, and every ViT tensor of the file must be placed or be one the layout is known not to
use; otherwise :class:`~maskahand.afformer.encoder.WeightsFileError` names the file and the keys.
"""

from __future__ import annotations

import codecs
import io
import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maskahand.afformer.encoder import WeightsFileError
from maskahand.afformer.vit import ViTDetEncoder
from maskahand.detector.precomputed import _NoGlobalsUnpickler

log = logging.getLogger(__name__)

DETECTRON2_PREFIX = "backbone.net."
MAE_UNUSED = ("cls_token", "norm.weight", "norm.bias", "mask_token", "fc_norm.", "head.", "decoder_")

# the only globals a pickled numpy array needs (numpy 1.x and 2.x module names; protocol 2 writes an
# array's bytes through codecs.encode(str, "latin1"))
_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): codecs.encode,
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,  # type: ignore[attr-defined]
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,  # type: ignore[attr-defined]
    ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,  # type: ignore[attr-defined]
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,  # type: ignore[attr-defined]
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyArraysUnpickler(_NoGlobalsUnpickler):
    """The project's no-globals unpickler, letting through numpy array reconstruction only."""

    def find_class(self, module: str, name: str) -> Any:
        found = _NUMPY_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are accepted")
        return found


def read_detectron2_pickle(path: str | Path) -> dict[str, torch.Tensor]:
    """A detectron2 ``.pkl`` checkpoint's ``model`` dict as tensors (no code from the file runs)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise WeightsFileError(f"{path}: cannot read ViTDet weights: {e}") from e
    try:
        obj = _NumpyArraysUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
    ) as e:
        raise WeightsFileError(f"{path}: not a detectron2 checkpoint pickle of numpy arrays: {e}") from e
    model = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(model, dict):
        raise WeightsFileError(f"{path}: expected a dict with a 'model' mapping, got {type(obj).__name__}")
    out: dict[str, torch.Tensor] = {}
    for key, value in model.items():
        if not isinstance(value, np.ndarray):
            raise WeightsFileError(f"{path}: {key} is a {type(value).__name__}, not a numpy array")
        out[str(key)] = torch.from_numpy(np.ascontiguousarray(value))
    return out


def plain_vit_to_encoder(name: str, encoder: ViTDetEncoder) -> list[str]:
    """Our encoder names for a plain-ViT name (``blocks.i.*``, ``patch_embed.*``, ``pos_embed``)."""
    if name.startswith("blocks."):
        index, rest = name[len("blocks.") :].split(".", 1)
        i = int(index)
        if i < encoder.start:
            return [f"shared_blocks.{i}.{rest}"]
        return [f"video_blocks.{i - encoder.start}.{rest}", f"image_blocks.{i - encoder.start}.{rest}"]
    return [name]


def load_vit_weights(encoder: ViTDetEncoder, path: str | Path) -> str:
    """Load ``path`` (detectron2 ``.pkl``, MAE ``.pth`` or an authors' Afformer checkpoint) into
    ``encoder``; returns the layout's name. Raises :class:`WeightsFileError` naming file and keys."""
    path = Path(path)
    if path.suffix == ".pkl":
        state = read_detectron2_pickle(path)
        layout = "detectron2 ViTDet"
        vit = {k[len(DETECTRON2_PREFIX) :]: v for k, v in state.items() if k.startswith(DETECTRON2_PREFIX)}
        skipped = len(state) - len(vit)
        if not vit:
            raise WeightsFileError(f"{path}: no {DETECTRON2_PREFIX}* tensors: not a ViTDet checkpoint")
        placed = _place_plain_vit(encoder, vit, path, unused=())
    else:
        from maskahand.afformer.checkpoint import CheckpointMismatchError, read_state_dict

        raw = _read_torch(path)
        if isinstance(raw, Mapping) and isinstance(raw.get("model"), Mapping):
            raw = raw["model"]
        if not isinstance(raw, Mapping):
            raise WeightsFileError(f"{path}: does not hold a state dict of tensors")
        try:
            state = read_state_dict(raw)
        except CheckpointMismatchError as e:
            raise WeightsFileError(f"{path}: {e}") from e
        if any(k.startswith("encoder.") for k in state):
            layout = "Afformer (authors' layout)"
            enc = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
            skipped = len(state) - len(enc)
            placed = _place(encoder, enc, path, {k: [k] for k in enc}, zero_missing=())
        elif any(k.startswith("blocks.") for k in state):
            layout = "MAE ViT"
            skipped = 0
            placed = _place_plain_vit(encoder, state, path, unused=MAE_UNUSED)
        else:
            raise WeightsFileError(
                f"{path}: neither MAE ViT names (blocks.*) nor an Afformer checkpoint (encoder.*); "
                f"first keys: {sorted(state)[:5]}"
            )
    log.info(
        "ViT weights from %s (%s): %d tensors placed, %d skipped (not encoder)", path, layout, placed, skipped
    )
    return layout


def _read_torch(path: Path) -> Any:
    from maskahand.trainer.checkpoint import load_torch_file  # the one weights-file reader

    return load_torch_file(path, "ViT weights", error=WeightsFileError)


def _place_plain_vit(
    encoder: ViTDetEncoder, vit: Mapping[str, torch.Tensor], path: Path, unused: tuple[str, ...]
) -> int:
    ignored = [k for k in vit if k.startswith(unused)]
    targets = {k: plain_vit_to_encoder(k, encoder) for k in vit if k not in ignored}
    # MAE has no relative-position tables: ViTDet starts them at zero (rel_pos_zero_init)
    zero = (".attn.rel_pos_h", ".attn.rel_pos_w") if unused else ()
    return _place(encoder, vit, path, targets, zero_missing=zero)


def _place(
    encoder: ViTDetEncoder,
    source: Mapping[str, torch.Tensor],
    path: Path,
    targets: Mapping[str, list[str]],
    zero_missing: tuple[str, ...],
) -> int:
    ours = encoder.state_dict()
    picked: dict[str, torch.Tensor] = {}
    unexpected, mismatched = [], []
    for key, names in targets.items():
        for name in names:
            if name not in ours:
                unexpected.append(key)
            elif ours[name].shape != source[key].shape:
                mismatched.append(f"{key} {tuple(source[key].shape)} vs {name} {tuple(ours[name].shape)}")
            else:
                picked[name] = source[key].to(ours[name].dtype)
    for name in ours:
        if name not in picked and name.endswith(zero_missing) and zero_missing:
            picked[name] = torch.zeros_like(ours[name])
    missing = [k for k in ours if k not in picked]
    problems = []
    if missing:
        problems.append(f"{len(missing)} encoder tensors missing (e.g. {', '.join(missing[:4])})")
    if unexpected:
        problems.append(
            f"{len(unexpected)} tensors with no place in the encoder ({', '.join(sorted(set(unexpected))[:4])})"
        )
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches ({'; '.join(mismatched[:3])})")
    if problems:
        raise WeightsFileError(f"{path}: does not fit this ViT encoder: {'; '.join(problems)}")
    encoder.load_state_dict(picked, strict=True)
    return len(picked)
