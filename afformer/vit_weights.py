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
use; otherwise :class:`~maskahand.runtime.weights.WeightsFileError` names the file and the keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from ..runtime.weights import Renamer, WeightsFileError, load_strict, read_weights, unwrap_state_dict
from .checkpoint import LIGHTNING_PREFIX
from .vit import ViTDetEncoder

log = logging.getLogger(__name__)

DETECTRON2_PREFIX = "backbone.net."
MAE_UNUSED = ("cls_token", "norm.weight", "norm.bias", "mask_token", "fc_norm.", "head.", "decoder_")
ZERO_TABLES = (".attn.rel_pos_h", ".attn.rel_pos_w")


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
    ``encoder``; returns the layout's name. Raises :class:`~maskahand.runtime.weights.WeightsFileError`
    naming file and keys."""
    path = Path(path)
    obj = read_weights(path, "ViT weights")  # a .pkl through the restricted unpickler: numpy arrays only
    state = unwrap_state_dict(obj, str(path), ("model", "state_dict"), LIGHTNING_PREFIX)
    if any(k.startswith(DETECTRON2_PREFIX) for k in state):
        layout = "detectron2 ViTDet"
        vit = {k[len(DETECTRON2_PREFIX) :]: v for k, v in state.items() if k.startswith(DETECTRON2_PREFIX)}
        skipped = len(state) - len(vit)
        placed = _place_plain_vit(encoder, vit, path, unused=())
    elif any(k.startswith("encoder.") for k in state):
        layout = "Afformer (authors' layout)"
        enc = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        skipped = len(state) - len(enc)
        placed = _place(encoder, enc, path)
    elif any(k.startswith("blocks.") for k in state):
        layout = "MAE ViT"
        skipped = 0
        placed = _place_plain_vit(encoder, state, path, unused=MAE_UNUSED)
    else:
        raise WeightsFileError(
            f"{path}: neither a detectron2 ViTDet checkpoint ({DETECTRON2_PREFIX}*), MAE ViT names (blocks.*) "
            f"nor an Afformer checkpoint (encoder.*); first keys: {sorted(state)[:5]}"
        )
    log.info(
        "ViT weights from %s (%s): %d tensors placed, %d skipped (not encoder)", path, layout, placed, skipped
    )
    return layout


def _place_plain_vit(
    encoder: ViTDetEncoder, vit: Mapping[str, torch.Tensor], path: Path, unused: tuple[str, ...]
) -> int:
    state = {k: v for k, v in vit.items() if not k.startswith(unused)}
    if unused:  # MAE has no relative-position tables: ViTDet starts them at zero (rel_pos_zero_init)
        targets = {n for k in state for n in plain_vit_to_encoder(k, encoder)}
        state |= {
            n: torch.zeros_like(t)
            for n, t in encoder.state_dict().items()
            if n.endswith(ZERO_TABLES) and n not in targets
        }
    return _place(encoder, state, path, lambda k: plain_vit_to_encoder(k, encoder))


def _place(
    encoder: ViTDetEncoder, state: Mapping[str, torch.Tensor], path: Path, to_model: Renamer | None = None
) -> int:
    report = load_strict(encoder, state, str(path), "this ViT encoder", to_model=to_model)
    return len(report.loaded)
