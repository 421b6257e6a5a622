"""Afformer as an evaluation predictor (see :mod:`maskahand.evaluation.predictor`).

Checkpoints it reads: a maskahand training checkpoint (``RUN/checkpoints/step_*.pt``, or the run folder
RUN for its latest one: the model config comes from it), or a plain state dict in our names or the authors' (their Lightning ``.ckpt``, our
exported ``afformer_maskahand.pth``), whose size (width, heads, relative-position tables, heatmaps, actions)
is read off its tensors.
Each clip of a video is predicted (``eval.clip_batch`` clips per forward); the per-pixel softmax maps and
the action probabilities of all clips are summed, as the authors merge a video's clips.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..core.config import AfformerConfig
from ..core.configbase import from_dict
from ..runtime.checkpoint_files import FORMAT, latest_checkpoint
from .predictor import Prediction

log = logging.getLogger(__name__)
HEATMAP_KEY = "predictor.heatmap.up2.weight"  # (dim/2, num_heatmaps, 2, 2)
ACTION_KEY = "predictor.action.fc.weight"  # (num_actions, dim/2)


LEVEL_KEY = "decoder.level_embeds.0"  # (hidden,)
SELF_H_KEY = "decoder.block.self_attn.rel_pos_h"  # (2 * max_q_h - 1, hidden / heads)
SELF_W_KEY = "decoder.block.self_attn.rel_pos_w"
CROSS_KEYS = tuple(f"decoder.block.cross_attn.rel_pos_{a}" for a in "thw")  # (2 * max_kv - 1, hidden / heads)


def vitdet_config_from_state_dict(state: dict[str, torch.Tensor], cfg: AfformerConfig) -> AfformerConfig:
    """``cfg`` with the ViTDet Afformer sizes a state dict (our names) fixes: the ViT's width, heads, patch,
    depth, trainable blocks, absolute-table grid, window and global blocks (window blocks have the shortest
    relative tables, 2 * window - 1 rows; global blocks the longest, 2 * img_size / patch - 1), and the
    decoder's width, heads and table sizes."""

    patch = int(state["encoder.patch_embed.proj.weight"].shape[-1])
    dim = int(state["encoder.pos_embed"].shape[-1])
    grid = math.isqrt(int(state["encoder.pos_embed"].shape[1]) - 1)
    shared = {int(k.split(".")[2]) for k in state if k.startswith("encoder.shared_blocks.")}
    video = {int(k.split(".")[2]) for k in state if k.startswith("encoder.video_blocks.")}
    start, depth = len(shared), len(shared) + len(video)

    def rows(i: int) -> int:
        name = f"encoder.shared_blocks.{i}" if i < start else f"encoder.video_blocks.{i - start}"
        return int(state[f"{name}.attn.rel_pos_h"].shape[0])

    lengths = [rows(i) for i in range(depth)]
    head_dim = int(state[f"encoder.{'shared' if start else 'video'}_blocks.0.attn.rel_pos_h"].shape[1])
    cross_t, cross_h, cross_w = (
        int(state[f"decoder.cross_block.cross_attn.rel_pos_{a}"].shape[0]) for a in "thw"
    )
    hidden = int(state["decoder.down.weight"].shape[0])
    cross_head_dim = int(state["decoder.cross_block.cross_attn.rel_pos_t"].shape[1])
    return replace(
        cfg,
        encoder="vitdet_b",
        hidden=hidden,
        heads=hidden // cross_head_dim,
        vit_dim=dim,
        vit_heads=dim // head_dim,
        vit_patch=patch,
        vit_depth=depth,
        vit_trainable_blocks=len(video),
        vit_pretrain_size=grid * patch,
        vit_window=(min(lengths) + 1) // 2,
        vit_img_size=(max(lengths) + 1) // 2 * patch,
        vit_global_blocks=[
            i for i, n in enumerate(lengths) if n == max(lengths) and max(lengths) != min(lengths)
        ],
        max_q_thw=[1, (cross_h + 1) // 2, (cross_w + 1) // 2],
        max_kv_thw=[max((cross_t + 1) // 2, cfg.max_kv_thw[0]), (cross_h + 1) // 2, (cross_w + 1) // 2],
    )


def config_from_state_dict(state: dict[str, torch.Tensor], base: AfformerConfig) -> AfformerConfig:
    """``base`` with what a plain state dict (our names) fixes: width, heads (the width over a relative-position
    table's per-head width), the spatial table sizes, heatmaps and actions. A spatial cross-attention table
    covers max(query, key) sizes, so ``max_kv_thw[1:]`` comes back as that maximum (the same tables). The time
    table keeps ``base``'s length when that is longer (a shorter saved table loads into its front, exactly)."""
    cfg = replace(
        base,
        num_heatmaps=int(state[HEATMAP_KEY].shape[1]),
        num_actions=int(state[ACTION_KEY].shape[0]) if ACTION_KEY in state else 0,
        backbone_weights=None,
    )
    if "encoder.pos_embed" in state:  # the ViTDet Afformer (model.encoder=vitdet_b)
        return vitdet_config_from_state_dict(state, cfg)
    if LEVEL_KEY in state and SELF_H_KEY in state:
        hidden, head_dim = int(state[LEVEL_KEY].shape[0]), int(state[SELF_H_KEY].shape[1])
        if head_dim <= 0 or hidden % head_dim:
            raise ValueError(f"{SELF_H_KEY} {tuple(state[SELF_H_KEY].shape)} does not divide hidden {hidden}")
        cfg = replace(cfg, hidden=hidden, heads=hidden // head_dim)
    if SELF_H_KEY in state and SELF_W_KEY in state:
        q = [(int(state[k].shape[0]) + 1) // 2 for k in (SELF_H_KEY, SELF_W_KEY)]
        cfg = replace(cfg, max_q_thw=[cfg.max_q_thw[0], *q])
    if all(k in state for k in CROSS_KEYS):
        t, h, w = ((int(state[k].shape[0]) + 1) // 2 for k in CROSS_KEYS)
        cfg = replace(cfg, max_kv_thw=[max(t, cfg.max_kv_thw[0]), h, w])
    return cfg


def load_afformer(checkpoint: str | Path, base: AfformerConfig | None = None):
    """(model in eval mode on the CPU, its config) from any checkpoint form above."""
    # deferred: numpy, torchvision at import
    from ..afformer import build_model, from_reference_name, load_reference_checkpoint
    from ..afformer.checkpoint import read_state_dict
    from ..runtime.weights import WeightsFileError, load_torch_file

    if Path(checkpoint).is_dir():  # a run folder: its latest training checkpoint
        found = latest_checkpoint(checkpoint)
        if found is None:
            raise WeightsFileError(f"{checkpoint}: a folder without checkpoints/step_*.pt")
        checkpoint = found
    raw = load_torch_file(checkpoint, "Afformer checkpoint")
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        model_cfg = (raw.get("config") or {}).get("model")
        if not isinstance(model_cfg, dict):
            raise WeightsFileError(f"{checkpoint}: training checkpoint without a model config")
        cfg = from_dict(AfformerConfig, model_cfg, "model.")
        state = raw["model"]
    else:
        state = read_state_dict(raw)
        ours = {k if k in (HEATMAP_KEY, ACTION_KEY) else from_reference_name(k): v for k, v in state.items()}
        if HEATMAP_KEY not in ours:
            raise WeightsFileError(f"{checkpoint}: no heatmap head ({HEATMAP_KEY}) in this state dict")
        cfg = config_from_state_dict(ours, base or AfformerConfig())
        log.info(
            "%s: a plain state dict; read off its tensors: hidden %d, heads %d, max_q_thw %s, max_kv_thw %s, "
            "%d heatmaps, %d actions",
            checkpoint,
            cfg.hidden,
            cfg.heads,
            cfg.max_q_thw,
            cfg.max_kv_thw,
            cfg.num_heatmaps,
            cfg.num_actions,
        )
    cfg = replace(cfg, backbone_weights=None)  # the checkpoint holds the encoder
    model = build_model(cfg)
    load_reference_checkpoint(model, state, strict=True)
    return model.eval(), cfg


class AfformerPredictor:
    needs_media = True

    def __init__(self, model, cfg: AfformerConfig, device: torch.device, clip_batch: int = 4, name: str = ""):
        self.model = model.to(device)
        self.cfg = cfg
        self.device = device
        self.clip_batch = clip_batch
        self.name = name or "afformer"

    @torch.no_grad()
    def __call__(self, clips: list[torch.Tensor], image: torch.Tensor | None) -> Prediction:
        if image is None or not clips:
            raise ValueError("Afformer needs a target image and at least one clip")
        heat = act = None
        for i in range(0, len(clips), self.clip_batch):
            group = clips[i : i + self.clip_batch]
            longest = max(len(c) for c in group)
            video = torch.zeros(len(group), longest, *group[0].shape[1:], dtype=torch.uint8)
            for j, c in enumerate(group):
                video[j, : len(c)] = c
            counts = torch.tensor([len(c) for c in group])
            images = image.unsqueeze(0).expand(len(group), -1, -1, -1)
            pred = self.model.predict(video.to(self.device), images.to(self.device), num_frames=counts)
            h = pred.heatmaps.float().sum(0)
            heat = h if heat is None else heat + h
            if pred.actions is not None:
                a = pred.actions.float().sum(0)
                act = a if act is None else act + a
        assert heat is not None, "at least one view"
        return Prediction(heatmaps=heat.cpu(), actions=None if act is None else act.cpu())


def build_predictor(checkpoint: str, recipe: Any, device: torch.device) -> AfformerPredictor:
    model, cfg = load_afformer(checkpoint)
    kind = "zero-shot" if cfg.num_heatmaps == 1 else f"{cfg.num_heatmaps} heatmaps"
    log.info("Afformer from %s (%s, %d actions)", checkpoint, kind, cfg.num_actions)
    return AfformerPredictor(
        model, cfg, device, recipe.eval.clip_batch, name=f"afformer:{Path(checkpoint).name}"
    )
