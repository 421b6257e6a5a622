"""The Interaction Hotspots model (seed 001 section 3, seed 000 S4/S5).

    model = build_model(HotspotsConfig(num_verbs=7, backbone_weights="resnet50-imagenet.pth"))
    out = model(frames, lengths, verbs, inactive=images)      # training: out.total, out.terms
    logits = model(frames, lengths).logits                     # action recognition only
    maps = intcam(model, images)                               # (B, verbs, 28, 28) hotspots at 224

Frames and images are RGB, float in [0, 1] or uint8; the model normalises them with ImageNet statistics.
Clips of different lengths are zero-padded to the longest and ``lengths`` (B,) gives the real counts: the
LSTM never sees the padding, so a clip's outputs equal those of the clip run alone.

Parts (their names in brackets, see :mod:`maskahand.hotspots.checkpoint`):
``backbone`` [backbone.rnet] dilated ResNet-50, frozen; ``lstm`` [rnn] one LSTM layer over L2-pooled frame
features, starting from the learned state ``h0``/``c0``; ``classifier`` [fc] linear over the verbs;
``anticipation`` [project] two conv3x3-BN-ReLU blocks at d = 2048 mapping an inactive image's features to
its anticipated active state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..core.config import HotspotsConfig
from ..runtime.weights import WeightsFileError
from .backbone import (
    FEAT_DIM,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DilatedResNet50,
    load_imagenet_weights,
)


class ConvBNReLU(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(dim)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


@dataclass
class HotspotsOutput:
    logits: torch.Tensor  # (B, verbs) from the clip's final LSTM state
    total: torch.Tensor | None = None  # scalar training loss (None without verbs)
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # per-sample losses: cls, ant, aux
    active_index: torch.Tensor | None = None  # (B,) the frame chosen as the active state


class HotspotsModel(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, cfg: HotspotsConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.backbone = DilatedResNet50(cfg.dilation)
        self.lstm = nn.LSTM(FEAT_DIM, cfg.hidden, batch_first=True)
        self.classifier = nn.Linear(cfg.hidden, cfg.num_verbs)
        self.anticipation = nn.Sequential(ConvBNReLU(FEAT_DIM), ConvBNReLU(FEAT_DIM))
        self.h0 = nn.Parameter(torch.empty(1, 1, cfg.hidden))
        self.c0 = nn.Parameter(torch.empty(1, 1, cfg.hidden))
        self.register_buffer("mean", torch.empty(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.empty(1, 3, 1, 1), persistent=False)
        self.fill_constants()
        self._init_state()

    def _init_state(self) -> None:
        gain = nn.init.calculate_gain("relu")  # as theirs: Xavier-normal learned initial state
        nn.init.xavier_normal_(self.h0, gain=gain)
        nn.init.xavier_normal_(self.c0, gain=gain)

    def fill_constants(self) -> None:
        """The non-persistent ImageNet statistics (re-filled after ``to_empty``)."""
        with torch.no_grad():
            self.mean.copy_(torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self.std.copy_(torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def reset_trainable(self) -> None:
        """Fresh initialisation of every trainable part (torch defaults, Xavier initial state)."""
        self.lstm.reset_parameters()
        self.classifier.reset_parameters()
        for block in self.anticipation.modules():
            if isinstance(block, ConvBNReLU):
                block.conv.reset_parameters()
                block.bn.reset_parameters()
        self._init_state()

    # -- building blocks ------------------------------------------------------------------------------

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) RGB in [0,1] or uint8 -> frozen backbone features (N, 2048, H/8, W/8)."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return self.backbone((x - self.mean) / self.std)

    def pool(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, C): L2 pooling (sqrt of the sum of squares over space) or the mean."""
        if self.cfg.pool == "l2":
            # lp_pool2d's backward is finite where a channel is all zero (a plain sqrt's is not)
            return F.lp_pool2d(feats, 2, (int(feats.shape[-2]), int(feats.shape[-1]))).flatten(1)
        return feats.mean((2, 3))

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            self.h0.expand(-1, batch, -1).contiguous(),
            self.c0.expand(-1, batch, -1).contiguous(),
        )

    def run_lstm(
        self, seq: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) pooled features -> final hidden state at each clip's last real frame (B, hidden)
        and the per-step outputs (B, T, hidden), zero at padded steps."""
        B, T = seq.shape[:2]
        if lengths is None:
            out, (hn, _) = self.lstm(seq, self.initial_state(B))
            return hn[-1], out
        lengths = lengths.detach().to("cpu", torch.int64)
        if int(lengths.min()) < 1 or int(lengths.max()) > T:
            raise ValueError(f"lengths must be in 1..{T} (the padded clip length), got {lengths.tolist()}")
        packed = pack_padded_sequence(seq, lengths, batch_first=True, enforce_sorted=False)
        out, (hn, _) = self.lstm(packed, self.initial_state(B))
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        return hn[-1], out

    def anticipate(self, feats: torch.Tensor) -> torch.Tensor:
        """Inactive features (N, 2048, h, w) -> anticipated active features (same shape)."""
        return self.anticipation(feats) if self.cfg.ant_loss != "none" else feats

    def single_step_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """One LSTM step from the learned initial state: (N, C) -> verb logits (N, verbs)."""
        _, (hn, _) = self.lstm(pooled.unsqueeze(1), self.initial_state(pooled.shape[0]))
        return self.classifier(hn[-1])

    def hotspot_logits(self, inactive_feats: torch.Tensor) -> torch.Tensor:
        """Verb scores of inactive backbone features through the anticipation module (IntCAM's graph)."""
        return self.single_step_logits(self.pool(self.anticipate(inactive_feats)))

    # -- forward -------------------------------------------------------------------------------------

    def forward(
        self,
        frames: torch.Tensor,
        lengths: torch.Tensor | None = None,
        verbs: torch.Tensor | None = None,
        inactive: torch.Tensor | None = None,
        negative: torch.Tensor | None = None,
    ) -> HotspotsOutput:
        """frames (B,T,3,H,W) zero-padded clips, lengths (B,), verbs (B,) labels, inactive (B,3,H,W)
        images (the anticipation's input), negative (B,3,H,W) other-class images (triplet loss only)."""
        B, T = frames.shape[:2]
        frame_feats = self.features(frames.flatten(0, 1))
        pooled = self.pool(frame_feats).view(B, T, -1)
        final, steps = self.run_lstm(pooled, lengths)
        logits = self.classifier(final)
        if verbs is None:
            return HotspotsOutput(logits=logits)
        terms = {"cls": F.cross_entropy(logits, verbs, reduction="none")}
        out = HotspotsOutput(logits=logits, terms=terms)
        if inactive is not None and self.cfg.ant_loss != "none":
            active, out.active_index = self._active_state(pooled, steps, verbs, lengths)
            anticipated = self.pool(self.anticipation(self.features(inactive)))
            terms["aux"] = self.cfg.aux_weight * F.cross_entropy(
                self.single_step_logits(anticipated), verbs, reduction="none"
            )
            if self.cfg.ant_loss == "mse":
                terms["ant"] = self.cfg.mse_weight * (anticipated - active).pow(2).mean(1)
            else:
                if negative is None:
                    raise ValueError("the triplet anticipation loss needs negative images")
                neg = self.pool(self.features(negative))
                terms["ant"] = self.cfg.triplet_weight * F.triplet_margin_loss(
                    F.normalize(anticipated, dim=1),
                    F.normalize(active, dim=1),
                    F.normalize(neg, dim=1),
                    margin=self.cfg.triplet_margin,
                    reduction="none",
                )
        out.total = torch.stack([t.mean() for t in terms.values()]).sum()
        return out

    def _active_state(
        self, pooled: torch.Tensor, steps: torch.Tensor, verbs: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features of the frame where the LSTM is most confident of the true verb (seed 001 eq. 3)."""
        B, T = pooled.shape[:2]
        with torch.no_grad():
            step_logits = self.classifier(steps)  # (B, T, verbs)
            score = -F.cross_entropy(
                step_logits.flatten(0, 1), verbs.repeat_interleave(T), reduction="none"
            ).view(B, T)
            if lengths is not None:
                # padded steps never win (theirs clamps the winner to the last real frame instead)
                pad = torch.arange(T, device=score.device)[None] >= lengths.to(score.device)[:, None]
                score = score.masked_fill(pad, float("-inf"))
            index = score.argmax(1)
        return pooled[torch.arange(B, device=pooled.device), index], index

    # -- training helpers ----------------------------------------------------------------------------

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def build_model(cfg: HotspotsConfig) -> HotspotsModel:
    """A new model with the ImageNet backbone from ``cfg.backbone_weights`` (required: never random)."""
    if not cfg.backbone_weights:
        raise WeightsFileError(
            "model.backbone_weights is not set: Interaction Hotspots needs torchvision's ImageNet resnet50 "
            "state dict (ResNet50_Weights.IMAGENET1K_V1) as a local file"
        )
    model = uninitialised_model(cfg)
    model.reset_trainable()
    load_imagenet_weights(model.backbone, cfg.backbone_weights)
    return model


def uninitialised_model(cfg: HotspotsConfig) -> HotspotsModel:
    """The model with allocated but unset weights (fast: no random initialisation of 130 M parameters),
    for callers that load or initialise every tensor next. BatchNorm counters start at 0."""
    with torch.device("meta"):
        model = HotspotsModel(cfg)
    model.to_empty(device="cpu")
    model.fill_constants()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.num_batches_tracked is not None:
            m.num_batches_tracked.zero_()
    return model
