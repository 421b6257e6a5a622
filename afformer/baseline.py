"""The naive R50-Deconv baseline (seed 002 table 1): ResNet-50 c5 features + deconvolution head.

Image c5 (stride 32) is projected to ``hidden`` channels, the video's c5 features are averaged over
valid frames and space into one vector added to every image position, and three stride-2 transposed
convolutions bring stride 32 to stride 4 before the same predictor as Afformer (stride 4 -> 1).
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.config import AfformerConfig
from .encoder import BODY_CHANNELS, Encoder
from .heads import Predictor
from .layers import ChannelLayerNorm
from .model import AfformerOutput, GroundingModel, check_inputs, frame_counts, real_frames


class DeconvStage(nn.Sequential):
    def __init__(self, dim: int):
        super().__init__(
            nn.ConvTranspose2d(dim, dim, 4, stride=2, padding=1), ChannelLayerNorm(dim), nn.GELU()
        )


class R50Deconv(GroundingModel):
    def __init__(self, cfg: AfformerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(with_fpn=False)
        self.proj = nn.Conv2d(BODY_CHANNELS[-1], cfg.hidden, 1)
        self.deconv = nn.Sequential(*(DeconvStage(cfg.hidden) for _ in range(3)))
        self.predictor = Predictor(cfg.hidden, cfg.num_heatmaps, cfg.num_actions)
        self.init_encoder(cfg)

    def forward(self, video: torch.Tensor, image: torch.Tensor, num_frames=None) -> AfformerOutput:
        check_inputs(video, image)
        b, t = video.shape[:2]
        counts = frame_counts(num_frames, b, t, video.device)
        image_c5 = self.proj(self.encoder.body_features(image)[-1])
        frames, valid = real_frames(video, counts)
        owner = torch.arange(b, device=video.device)[:, None].expand(b, t)  # each frame's sample
        owner = owner.flatten() if valid is None else owner[valid]
        counts_f = torch.full((b,), t, device=video.device) if counts is None else counts
        frame_vec = self.proj(self.encoder.body_features(frames)[-1]).mean(dim=(2, 3))
        video_vec = frame_vec.new_zeros(b, frame_vec.shape[1]).index_add(0, owner, frame_vec)
        video_vec = video_vec / counts_f[:, None].to(video_vec.dtype)
        decoded = self.deconv(image_c5 + video_vec[:, :, None, None])
        heatmap, action = self.predictor(decoded)
        return AfformerOutput(heatmap_logits=heatmap, action_logits=action)
