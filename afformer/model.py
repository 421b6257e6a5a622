"""Afformer (seed 002 section 3): shared encoder -> fine-grained decoder -> predictor.

Inputs: ``video`` (B, T, 3, H, W) and ``image`` (B, 3, H, W), float in [0, 1] or uint8. Videos of
different lengths share a batch by padding to the longest clip and passing ``num_frames`` (B,): padded
frames are never encoded, are zero for the temporal convolutions and are masked out of the attention,
so each sample's result equals running it alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.config import AfformerConfig
from .decoder import Decoder
from .encoder import Encoder, level_index, load_backbone_weights
from .heads import Predictor
from .loss import LossTerms, action_probabilities, afformer_loss
from .relpos import check_time_table
from .simple_decoder import SimpleDecoder
from .vit import ViTDetEncoder, ViTSpec
from .vit_weights import load_vit_weights


@dataclass
class AfformerOutput:
    heatmap_logits: torch.Tensor  # (B, num_heatmaps, H, W): softmax over pixels gives the heatmap
    action_logits: torch.Tensor | None  # (B, num_actions), None without an action head


@dataclass
class AfformerPrediction:
    heatmaps: torch.Tensor  # (B, num_heatmaps, H, W), each channel sums to 1
    actions: torch.Tensor | None  # (B, num_actions) independent sigmoid probabilities (multi-label)


def frame_counts(num_frames, batch: int, frames: int, device: torch.device) -> torch.Tensor | None:
    """Validated (B,) long tensor of valid frames, or None when every clip uses all ``frames``."""
    if num_frames is None:
        return None
    counts = torch.as_tensor(num_frames, dtype=torch.long, device=device).reshape(-1)
    if counts.numel() != batch:
        raise ValueError(f"num_frames has {counts.numel()} entries for a batch of {batch}")
    if int(counts.min()) < 1 or int(counts.max()) > frames:
        raise ValueError(f"num_frames must lie in 1..{frames} (the padded length), got {counts.tolist()}")
    return None if bool((counts == frames).all()) else counts


def real_frames(video: torch.Tensor, counts: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The frames of (B, T, ...) that are not padding, as (N, ...), and their (B, T) mask (None: all are)."""
    if counts is None:
        return video.flatten(0, 1), None
    valid = torch.arange(video.shape[1], device=video.device)[None, :] < counts[:, None]
    return video[valid], valid


def padded_again(feats: torch.Tensor, valid: torch.Tensor | None, batch: int, frames: int) -> torch.Tensor:
    """The inverse of :func:`real_frames`: (N, ...) back to (B, T, ...), zeros where the padding was."""
    if valid is None:
        return feats.unflatten(0, (batch, frames))
    return feats.new_zeros(batch, frames, *feats.shape[1:]).index_put((valid,), feats)


def check_inputs(video: torch.Tensor, image: torch.Tensor) -> None:
    if video.dim() != 5 or video.shape[2] != 3:
        raise ValueError(f"video must be (B, T, 3, H, W), got {tuple(video.shape)}")
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
    if video.shape[0] != image.shape[0]:
        raise ValueError(f"video batch {video.shape[0]} != image batch {image.shape[0]}")


class GroundingModel(nn.Module):
    """What Afformer and the R50-Deconv baseline share: loss, predict, parameter groups."""

    encoder: Encoder
    cfg: AfformerConfig

    def set_attention_mode(self, mode: str) -> None:
        """Switch between the efficient and reference attention (a no-op for models without any)."""

    def loss(
        self, out: AfformerOutput, heatmaps: torch.Tensor, actions: torch.Tensor | None = None
    ) -> LossTerms:
        """``actions``: (B, num_actions) multi-hot or (B,) indices (see :mod:`maskahand.afformer.loss`)."""
        return afformer_loss(out.heatmap_logits, out.action_logits, heatmaps, actions)

    @torch.no_grad()
    def predict(self, video: torch.Tensor, image: torch.Tensor, num_frames=None) -> AfformerPrediction:
        out = self(video, image, num_frames)
        heat = out.heatmap_logits.float()
        heat = heat.flatten(2).softmax(-1).view_as(heat)
        actions = action_probabilities(out.action_logits) if out.action_logits is not None else None
        return AfformerPrediction(heatmaps=heat, actions=actions)

    def param_groups(
        self, lr: float, weight_decay: float, backbone_lr_factor: float | None = None
    ) -> list[dict]:
        """AdamW groups: encoder at ``lr * backbone_lr_factor`` (default: the model config's), no weight
        decay on 1-D tensors (biases, norms, level embeddings); frozen parameters are left out."""
        factor = self.cfg.backbone_lr_factor if backbone_lr_factor is None else backbone_lr_factor
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            key = (name.startswith("encoder."), p.ndim <= 1)
            groups.setdefault(key, []).append(p)
        out = []
        for (is_backbone, no_decay), params in sorted(groups.items()):
            out.append(
                {
                    "name": f"{'backbone' if is_backbone else 'head'}{'_no_decay' if no_decay else ''}",
                    "params": params,
                    "lr": lr * (factor if is_backbone else 1.0),
                    "weight_decay": 0.0 if no_decay else weight_decay,
                }
            )
        return out

    def init_encoder(self, cfg: AfformerConfig) -> None:
        if cfg.backbone_weights:
            load_backbone_weights(self.encoder, cfg.backbone_weights)
        self.encoder.set_trainable(cfg.trainable_backbone_layers, freeze_all=cfg.freeze_backbone)


class Afformer(GroundingModel):
    def __init__(self, cfg: AfformerConfig):
        super().__init__()
        self.cfg = cfg
        self.image_levels = list(cfg.image_levels)
        for level in [*self.image_levels, cfg.video_level]:
            level_index(level)
        self.encoder = Encoder(with_fpn=True, out_channels=cfg.hidden)
        self.decoder = Decoder(
            cfg.hidden,
            cfg.heads,
            cfg.mlp_ratio,
            len(self.image_levels),
            cfg.max_q_thw,
            cfg.max_kv_thw,
            cfg.temporal_pyramid,
            cfg.attention,
        )
        self.predictor = Predictor(cfg.hidden, cfg.num_heatmaps, cfg.num_actions)
        self.init_encoder(cfg)

    def set_attention_mode(self, mode: str) -> None:
        self.decoder.block.set_attention_mode(mode)  # type: ignore[arg-type]

    def encode(
        self, video: torch.Tensor, image: torch.Tensor, counts: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Image levels (coarse to fine) and the padded video level (B, C, T, h, w)."""
        b, t = video.shape[:2]
        frames, valid = real_frames(video, counts)
        if frames.shape[-2:] == image.shape[-2:]:  # one body pass for image and frames
            feats = self.encoder.body_features(torch.cat([image, frames.to(image.dtype)]))
            image_feats = [f[:b] for f in feats]
            frame_feats = [f[b:] for f in feats]
        else:
            image_feats = self.encoder.body_features(image)
            frame_feats = self.encoder.body_features(frames)
        image_pyr = self.encoder.pyramid(image_feats, self.image_levels)
        frame_level = self.encoder.pyramid(frame_feats, [self.cfg.video_level])[self.cfg.video_level]
        padded = padded_again(frame_level, valid, b, t)
        return [image_pyr[lv] for lv in self.image_levels], padded.transpose(1, 2)

    def forward(self, video: torch.Tensor, image: torch.Tensor, num_frames=None) -> AfformerOutput:
        check_inputs(video, image)
        counts = frame_counts(num_frames, video.shape[0], video.shape[1], video.device)
        longest = video.shape[1] if counts is None else int(counts.max())
        check_time_table(self.decoder.block.cross_attn.rel_pos_t.shape[0], longest)  # before the encoder
        image_levels, video_level = self.encode(video, image, counts)
        decoded = self.decoder(image_levels, video_level, counts)
        heatmap, action = self.predictor(decoded)
        return AfformerOutput(heatmap_logits=heatmap, action_logits=action)


def vit_spec(cfg: AfformerConfig):

    return ViTSpec(
        dim=cfg.vit_dim,
        depth=cfg.vit_depth,
        heads=cfg.vit_heads,
        patch=cfg.vit_patch,
        mlp_ratio=4.0,
        window=cfg.vit_window,
        global_blocks=tuple(cfg.vit_global_blocks),
        img_size=cfg.vit_img_size,
        pretrain_size=cfg.vit_pretrain_size,
        drop_path=cfg.vit_drop_path,
        trainable=cfg.vit_trainable_blocks,
    )


class AfformerViTDet(GroundingModel):
    """Afformer with the ViTDet-B encoder, as the authors' ``configs/opra/vitdet_b.yaml`` builds it:
    :class:`~maskahand.afformer.vit.ViTDetEncoder` -> :class:`~maskahand.afformer.simple_decoder.SimpleDecoder`
    -> the same predictor as the R50 model (heatmaps at 4x the stride-16 grid: image_size / 4)."""

    def __init__(self, cfg: AfformerConfig):
        super().__init__()

        self.cfg = cfg
        self.encoder = ViTDetEncoder(vit_spec(cfg), cfg.attention, cfg.vit_chunk)  # type: ignore[assignment]
        self.decoder = SimpleDecoder(
            cfg.hidden, cfg.heads, cfg.mlp_ratio, cfg.max_q_thw, cfg.max_kv_thw, cfg.attention
        )
        self.predictor = Predictor(cfg.hidden, cfg.num_heatmaps, cfg.num_actions)
        self.init_encoder(cfg)

    def init_encoder(self, cfg: AfformerConfig) -> None:

        if cfg.backbone_weights:
            load_vit_weights(self.encoder, cfg.backbone_weights)  # type: ignore[arg-type]
        self.encoder.set_trainable(freeze_all=cfg.freeze_backbone)  # type: ignore[call-arg]

    def set_attention_mode(self, mode: str) -> None:
        self.encoder.set_attention_mode(mode)  # type: ignore[operator]
        self.decoder.set_attention_mode(mode)  # type: ignore[arg-type]

    def lr_layer_factor(self, name: str) -> float:
        """The layer-wise lr factor of parameter ``name`` (``cfg.lr_layer_decay``; 1 for non-ViT parameters)."""
        if not name.startswith("encoder."):
            return 1.0
        layer = self.encoder.layer_id(name[len("encoder.") :])  # type: ignore[operator]
        return float(self.cfg.lr_layer_decay ** (self.cfg.vit_depth + 1 - layer))

    def loss(
        self, out: AfformerOutput, heatmaps: torch.Tensor, actions: torch.Tensor | None = None
    ) -> LossTerms:
        """As :meth:`GroundingModel.loss`; targets made at the input size (a multiple of the heatmap size,
        which is image_size / 4 here) are area-averaged down to the predicted heatmap size first."""
        size = out.heatmap_logits.shape[-2:]
        if heatmaps.shape[-2:] != size:
            if heatmaps.shape[-2] % size[0] or heatmaps.shape[-1] % size[1]:
                raise ValueError(
                    f"target heatmaps {tuple(heatmaps.shape[-2:])} are not a multiple of the predicted {tuple(size)}"
                )
            heatmaps = torch.nn.functional.adaptive_avg_pool2d(heatmaps, (int(size[0]), int(size[1])))
        return super().loss(out, heatmaps, actions)

    no_weight_decay_names = ("encoder.pos_embed",)  # the authors' solver override pos_embed: weight_decay 0

    def encode(
        self, video: torch.Tensor, image: torch.Tensor, counts: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image features (B, C, H/16, W/16) and the padded video features (B, C, T, h, w)."""
        b, t = video.shape[:2]
        frames, valid = real_frames(video, counts)
        encoder = self.encoder
        image_feats = encoder.image_features(image)  # type: ignore[operator]
        frame_feats = encoder.frame_features(frames.to(image.dtype))  # type: ignore[operator]
        return image_feats, padded_again(frame_feats, valid, b, t).transpose(1, 2)

    def forward(self, video: torch.Tensor, image: torch.Tensor, num_frames=None) -> AfformerOutput:
        check_inputs(video, image)
        counts = frame_counts(num_frames, video.shape[0], video.shape[1], video.device)
        longest = video.shape[1] if counts is None else int(counts.max())
        check_time_table(self.decoder.cross_block.cross_attn.rel_pos_t.shape[0], longest)
        image_feats, video_feats = self.encode(video, image, counts)
        heatmap, action = self.predictor(self.decoder(image_feats, video_feats, counts))
        return AfformerOutput(heatmap_logits=heatmap, action_logits=action)


def build_model(cfg: AfformerConfig) -> GroundingModel:
    """Afformer (``arch: afformer``; ``encoder`` r50_fpn or vitdet_b) or the naive R50-Deconv baseline."""
    if cfg.arch == "afformer" and cfg.encoder == "vitdet_b":
        return AfformerViTDet(cfg)
    if cfg.arch == "afformer":
        return Afformer(cfg)
    if cfg.arch == "r50_deconv":
        # deferred: import cycle with maskahand.afformer.baseline
        from .baseline import R50Deconv

        return R50Deconv(cfg)
    raise ValueError(f"unknown model arch {cfg.arch!r}")
