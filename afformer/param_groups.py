"""Afformer's AdamW parameter groups: the authors' rules, tensor by tensor.

The authors build their groups with detectron2's ``get_default_optimizer_params(weight_decay_norm=0,
lr_factor_func=...)`` and ``lr_factors: {encoder: 0.1}``. What that means tensor by tensor:

- lr: parameters whose name starts with ``encoder.`` get ``lr * backbone_lr_factor``; all others ``lr``.
- weight decay 0 only for the parameters OWNED BY a torch normalisation module (``nn.LayerNorm``,
  ``nn.BatchNorm*``, ``nn.SyncBatchNorm``, ``nn.GroupNorm``, ``nn.InstanceNorm*``,
  ``nn.LocalResponseNorm``): detectron2 matches these module types by ``isinstance``. Everything else
  decays, biases included (``weight_decay_bias=None`` means "as the weights"), and so do the
  relative-position tables, the level embeddings and the channel LayerNorms written as plain modules
  (the authors' ``LayerNorm3D`` and detectron2's ``LN``; ours: ``ChannelLayerNorm``).
- frozen parameters are left out; a parameter shared by two modules is counted once.

The ViTDet-B model (``model.encoder=vitdet_b``) adds what the authors' ``configs/opra/vitdet_b.yaml``
asks for: a layer-wise lr factor per ViT parameter (``model.lr_layer_decay``, through the model's
``lr_layer_factor(name)``; each distinct factor is its own group, named ``encoder_x<factor>``), and no
weight decay on the names in the model's ``no_weight_decay_names`` (their ``overrides: pos_embed``).

The Afformer recipes (pretrain, finetune) return these from their ``TrainTask.param_groups``; the
engine builds the optimiser from them (:func:`maskahand.trainer.optim.build_optimizer`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from ..core.config import OptimConfig

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)

ENCODER_PREFIX = "encoder."


def afformer_param_groups(
    net: nn.Module, optim: OptimConfig, backbone_lr_factor: float | None = None
) -> list[dict]:
    """Up to four AdamW groups named ``encoder``, ``encoder_no_decay``, ``head``, ``head_no_decay``.

    ``net``: the model itself (unwrap a DistributedDataParallel first). ``backbone_lr_factor`` defaults
    to the model config's (``AfformerConfig.backbone_lr_factor``). Each group also carries
    ``param_names`` (for tests and logs; AdamW ignores unknown keys).
    """
    if backbone_lr_factor is None:
        backbone_lr_factor = float(getattr(getattr(net, "cfg", None), "backbone_lr_factor", 1.0))
    layer_factor = getattr(net, "lr_layer_factor", None)
    no_decay_names = set(getattr(net, "no_weight_decay_names", ()))
    seen: set[int] = set()
    groups: dict[tuple[str, float], dict] = {}
    for module_name, module in net.named_modules():
        is_norm = isinstance(module, NORM_TYPES)
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{module_name}.{pname}" if module_name else pname
            no_decay = is_norm or full in no_decay_names
            is_encoder = full.startswith(ENCODER_PREFIX)
            layer = float(layer_factor(full)) if callable(layer_factor) else 1.0
            name = ("encoder" if is_encoder else "head") + ("_no_decay" if no_decay else "")
            if layer != 1.0:
                name += f"_x{layer:.6g}"
            g = groups.setdefault(
                (name, layer),
                {
                    "name": name,
                    "params": [],
                    "param_names": [],
                    "lr": optim.lr * (backbone_lr_factor if is_encoder else 1.0) * layer,
                    "weight_decay": 0.0 if no_decay else optim.weight_decay,
                },
            )
            g["params"].append(p)
            g["param_names"].append(full)
    order = ["encoder", "encoder_no_decay", "head", "head_no_decay"]
    return [
        g for _, g in sorted(groups.items(), key=lambda kv: (order.index(kv[0][0].split("_x")[0]), -kv[0][1]))
    ]
