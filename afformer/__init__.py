"""maskahand.afformer: the Afformer model (seed 002 section 3), the R50-Deconv baseline, and attention
that never materialises the relative-position bias.

    from maskahand.afformer import build_model
    model = build_model(AfformerConfig(num_heatmaps=1))           # MaskAHand pretraining head
    out = model(video, image, num_frames=None)                    # video (B,T,3,H,W), image (B,3,H,W)
    terms = model.loss(out, heatmaps, actions)                    # terms.total, .heatmap, .action
    pred = model.predict(video, image)                            # per-pixel / action probabilities
    optimizer = torch.optim.AdamW(model.param_groups(lr, weight_decay))

Inputs are float in [0, 1] or uint8 RGB; 256 x 256 gives 256 x 256 heatmaps (any multiple of 32
works). Videos of different lengths: pad to the longest clip and pass ``num_frames`` (B,).

``model.encoder=vitdet_b`` builds :class:`AfformerViTDet` (the authors' ViTDet-B configuration); its
``model.backbone_weights`` is a detectron2 ViTDet ``.pkl`` or MAE ``.pth`` (:func:`load_vit_weights`).

COCO initialisation (``model.backbone_weights``): torchvision's ``fasterrcnn_resnet50_fpn_v2`` COCO
checkpoint (``FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1.url`` names the file), downloaded by the user;
nothing is ever downloaded by this package. The authors' Afformer checkpoints load with
:func:`load_reference_checkpoint`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "Afformer",
    "AfformerOutput",
    "AfformerViTDet",
    "AfformerPrediction",
    "GroundingModel",
    "LossTerms",
    "afformer_loss",
    "build_model",
    "from_reference_name",
    "heatmap_kl",
    "load_backbone_weights",
    "load_reference_checkpoint",
    "load_vit_weights",
    "to_reference_name",
    "to_reference_state_dict",
]

if TYPE_CHECKING:  # the exports, as type checkers see them; loaded on first use (maskahand.core.lazy)
    from .checkpoint import (
        from_reference_name,
        load_reference_checkpoint,
        to_reference_name,
        to_reference_state_dict,
    )
    from .encoder import load_backbone_weights
    from .loss import LossTerms, afformer_loss, heatmap_kl
    from .model import (
        Afformer,
        AfformerOutput,
        AfformerPrediction,
        AfformerViTDet,
        GroundingModel,
        build_model,
    )
    from .vit_weights import load_vit_weights
else:
    from ..core.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
