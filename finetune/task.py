"""Supervised fine-tuning of Afformer on a benchmark, as a :class:`~maskahand.trainer.TrainTask`.

The authors' OPRA recipe (``configs/opra/r50fpn.yaml`` + seed 002), the same for every dataset: one
heatmap per action + the action head, 256 x 256 inputs, horizontal flip of image, video and heatmaps with
p = 0.5, AdamW 3e-4 / 0.05 with the encoder at x0.1, cosine, 16-bit mixed precision, batch 16, 4k steps,
evaluation every 1000 steps. A sample is one clip of an entry's video (clips cut as the evaluation cuts
them: 32 frames at 2 fps, stride 16), and an epoch holds every clip of every entry once, as the authors'
``OPRA.__len__`` counts clips (:mod:`maskahand.finetune.clipindex`); its target is the authors' training
ground truth: per distinct action the points set to 1 (a pixel with several points is 1: the mask > 0),
+1e-10, blurred (kernel sqrt(h*w)/3), zero channels for the other actions, and the multi-hot action vector.

``train.heatmap_size=28`` trains for the Interaction Hotspots protocol (table 2's 28 x 28 rows): the
target is that protocol's ground truth (``gt_map_28``: points added, blurred, resized to 224 then 28) and
the predicted heatmap (a softmax over the model's output pixels) is resized to 28 x 28 bilinearly, as the
28 protocol resizes predictions, before the KL; evaluation during training then uses the 28 protocol.

``init``: a checkpoint (a pretrained 1-heatmap model loads everything but the heads, which are
re-initialised and listed in the log), ``coco`` (``model.backbone_weights``: torchvision's COCO
Faster R-CNN file) or ``none`` (random).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..afformer import build_model, from_reference_name, load_reference_checkpoint, to_reference_state_dict
from ..afformer.actckpt import enable_activation_checkpointing
from ..afformer.model import GroundingModel
from ..afformer.param_groups import afformer_param_groups
from ..core.config import FinetuneRecipe, OptimConfig
from ..evaluation.afformer_predictor import AfformerPredictor
from ..evaluation.assistq import box_map
from ..evaluation.benchmark import Benchmark, Entry, MediaError
from ..evaluation.clips import clip_span, load_clips, load_frame_list, load_image, open_image_file
from ..evaluation.metrics import gt_map_28, gt_map_256, resize_bilinear
from ..runtime.atomic import save_torch_atomic
from ..runtime.checkpoint_files import FORMAT
from ..runtime.weights import WeightsMismatchError, load_torch_file
from ..trainer import TrainTask, unwrap
from ..trainer.task import step_generator
from .clipindex import clip_index

log = logging.getLogger(__name__)
HEAD_PREFIX = "predictor."


def load_init(model: nn.Module, checkpoint: str) -> list[str]:
    """Load ``checkpoint`` into ``model``; tensors of the heads that do not fit (a pretrained 1-heatmap
    model into a per-action one) stay freshly initialised. Returns those names; anything else that does
    not fit is an error."""

    raw = load_torch_file(checkpoint, "initial checkpoint")
    state = raw["model"] if isinstance(raw, dict) and raw.get("format") == FORMAT else raw
    report = load_reference_checkpoint(model, state, strict=False)
    names = report.missing + [m.split(":")[0] for m in report.shape_mismatch]
    ours = [n if n in model.state_dict() else from_reference_name(n) for n in names]
    bad = [n for n in ours if not n.startswith(HEAD_PREFIX)] + report.unexpected
    if bad:
        raise WeightsMismatchError(
            f"{checkpoint}: does not fit the model beyond its heads: {report.describe()}", report
        )
    if ours:
        log.warning("init from %s: re-initialised the heads: %s", checkpoint, ", ".join(sorted(ours)))
    else:
        log.info("init from %s: every tensor loaded", checkpoint)
    return sorted(ours)


def training_target(entry: Entry, num_actions: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(num_actions, size, size) heatmaps (zeros for absent actions) and the (num_actions,) multi-hot."""

    heat = torch.zeros(num_actions, size, size)
    hot = torch.zeros(num_actions)
    for a in entry.distinct_actions:
        g = gt_map_256(entry.points_of(a), entry.height, entry.width).float()
        if g.shape != (size, size):
            g = F.interpolate(g[None, None], size=(size, size), mode="area")[0, 0]
        heat[a] = g
        hot[a] = 1.0
    return heat, hot


def training_target_28(entry: Entry, num_actions: int, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """The Hotspots-protocol target: per distinct action ``gt_map_28`` of the entry's points (at ``size``)."""

    heat = torch.zeros(num_actions, size, size)
    hot = torch.zeros(num_actions)
    for a in entry.distinct_actions:
        g = gt_map_28(entry.points_of(a), entry.height, entry.width)
        heat[a] = resize_bilinear(g, size).float()
        hot[a] = 1.0
    return heat, hot


def resize_heatmap_logits(logits: torch.Tensor, size: int) -> torch.Tensor:
    """(B, K, H, W) logits -> (B, K, size, size) log-probabilities of the predicted heatmaps resized to
    ``size`` (softmax over pixels, bilinear resize, renormalised); their softmax is that heatmap."""
    p = logits.float().flatten(2).softmax(-1).view(logits.shape)
    p = F.interpolate(p, size=(size, size), mode="bilinear", align_corners=False)
    p = p / p.flatten(2).sum(-1)[..., None, None]
    return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))


def box_target(bench: Benchmark, entry: Entry, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """AssistQ: the filled button boxes at ``size`` (one channel) and a single "press" action."""
    # deferred: PIL at import
    from PIL import Image

    with open_image_file(bench.resolve(entry.image)) as f, Image.open(f) as im:
        heat = box_map(entry.extra["boxes"], im.size, size).float()
    return heat[None], torch.ones(1)


class FinetuneTask(TrainTask):
    def __init__(self, recipe: FinetuneRecipe, train: Benchmark, val: Benchmark | None, init: str):
        self.recipe = recipe
        self.bench = train
        self.val = val
        self.init = init
        self.size = recipe.model.image_size
        self.heatmap_size = recipe.train.heatmap_size or self.size
        if self.heatmap_size != self.size and train.gt_rule == "boxes":
            raise ValueError(
                f"train.heatmap_size={self.heatmap_size}: {train.name} has box ground truth at "
                f"{self.size} only (the 256 rule); leave train.heatmap_size unset"
            )
        self._clips: list[tuple[int, int]] | None = None

    def clip_index(self) -> list[tuple[int, int]]:
        """``(entry position, clip number)`` for every clip: one epoch's samples (computed once)."""
        if self._clips is None:
            self._clips = clip_index(self.bench, self.recipe.eval, self.recipe.video)
            log.info(
                "fine-tuning epoch: %d clips of %d entries (one sample per clip, as the authors)",
                len(self._clips),
                len(self.bench.entries),
            )
        return self._clips

    def __len__(self) -> int:
        """Samples per epoch: the number of clips (the authors' ``OPRA.__len__``)."""
        return len(self.clip_index())

    def build_model(self) -> nn.Module:

        n = self.bench.num_actions
        cfg = replace(self.recipe.model, num_heatmaps=n, num_actions=n)
        if self.init == "coco":
            if not cfg.backbone_weights:
                raise ValueError(
                    "--init coco needs model.backbone_weights=<torchvision COCO fasterrcnn_resnet50_fpn_v2 file>"
                )
            return build_model(cfg)
        model = build_model(replace(cfg, backbone_weights=None))
        if self.init != "none":
            load_init(model, self.init)
        else:
            log.warning("--init none: the whole model starts from random weights")
        return model

    def param_groups(self, model: nn.Module, optim: OptimConfig) -> list[dict]:
        """Afformer's groups (the authors' rules: encoder at lr x ``model.backbone_lr_factor``, no weight
        decay on normalisation layers; ViTDet: layer-wise lr decay)."""
        return afformer_param_groups(unwrap(model), optim)

    def enable_activation_checkpointing(self, model: nn.Module) -> None:
        """``train.activation_checkpointing``: recompute the encoder and decoder blocks in backward."""
        enable_activation_checkpointing(unwrap(model))

    # -- data -------------------------------------------------------------------------------------
    def sample(self, entry: Entry, clip_no: int) -> dict[str, Any]:
        """Clip ``clip_no`` of ``entry`` (the last one when the video decodes to fewer clips than its
        container's frame times promised) with the entry's training target."""
        # deferred: cv2, webdataset at import
        from ..pretrain.data import uniform_indices

        cfg = replace(self.recipe.eval, image_size=self.size)
        try:
            image = load_image(self.bench.resolve(entry.image), self.size)
            if "frames" in entry.extra:  # AssistQ: the entry's frame list is its one clip
                clips = [load_frame_list([self.bench.resolve(f) for f in entry.extra["frames"]], self.size)]
            else:
                span = clip_span(entry.extra)  # an EPIC clip: a frame range of its video's folder
                clips = load_clips(self.bench.resolve(entry.video), cfg, self.recipe.video, frame_range=span)
        except Exception as e:  # noqa: BLE001 - video, image and OS errors alike
            raise MediaError(f"{self.bench.annotations}: {entry.describe()}: {e}") from e
        clip = clips[min(clip_no, len(clips) - 1)]
        keep = uniform_indices(len(clip), self.recipe.train.num_frames)
        if self.bench.gt_rule == "boxes":
            heat, hot = box_target(self.bench, entry, self.size)
        elif self.heatmap_size != self.size:
            heat, hot = training_target_28(entry, self.bench.num_actions, self.heatmap_size)
        else:
            heat, hot = training_target(entry, self.bench.num_actions, self.size)
        return {
            "key": f"{entry.index}#{clip_no}",
            "frames": clip[keep],
            "image": image,
            "heatmaps": heat,
            "actions": hot,
        }

    def train_batches(self, epoch: int, skip: int):
        ctx, train = self.ctx, self.recipe.train
        clips = self.clip_index()
        # one shuffle of every clip per epoch, the same on every rank; each rank takes every world_size-th
        order = torch.randperm(len(clips), generator=step_generator(train.seed, epoch, 0, stream=1))
        mine = [clips[int(i)] for i in order[ctx.rank :: ctx.world_size]][: len(clips) // ctx.world_size]
        size = ctx.micro_batch  # train.batch_size is the global batch
        batches = len(mine) // size  # drop_last, as the authors
        for b in range(skip, batches):
            picked = mine[b * size : (b + 1) * size]
            yield collate([self.sample(self.bench.entries[pos], k) for pos, k in picked])

    # -- step -------------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict]:
        gen = step_generator(self.recipe.train.seed, step, self.ctx.rank, stream=3)
        flip = (torch.rand(len(batch["key"]), generator=gen) < 0.5).to(batch["image"].device)
        frames, image, heat = (
            hflip(batch["frames"], flip),
            hflip(batch["image"], flip),
            hflip(batch["heatmaps"], flip),
        )
        out = model(frames, image, batch["num_frames"])
        if self.heatmap_size != out.heatmap_logits.shape[-1]:
            out = replace(out, heatmap_logits=resize_heatmap_logits(out.heatmap_logits, self.heatmap_size))
        terms = cast(GroundingModel, unwrap(model)).loss(out, heat, batch["actions"])
        scalars = {"kld": terms.heatmap.detach()}
        if terms.action is not None:
            scalars["action_bce"] = terms.action.detach()
        return terms.total, scalars

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        if self.val is None:
            return {}
        # deferred: tqdm at import
        from ..evaluation.evaluate import run_eval

        net = cast(GroundingModel, unwrap(model))
        was = net.training
        net.eval()
        pred = AfformerPredictor(net, net.cfg, self.ctx.device, self.recipe.eval.clip_batch)
        protocol = "28" if self.heatmap_size != self.size else "256"
        result = run_eval(
            self.val, pred, [protocol], replace(self.recipe.eval, image_size=self.size), progress=False
        )
        net.train(was)
        if result is None:
            return {}
        if protocol == "28":
            s28 = result.scores28
            return (
                {}
                if s28 is None
                else {"val28_kld": s28.kld[0], "val28_sim": s28.sim[0], "val28_auc_j": s28.auc_j[0]}
            )
        s = result.scores256
        if s is None:
            return {}
        out = {"val_kld": s.kld, "val_sim": s.sim}
        if s.auc_j is not None:
            out["val_auc_j"] = s.auc_j
        if s.top1 is not None:
            out["val_top1"] = s.top1
        return out

    def export(self, model: nn.Module, out_dir: Path) -> None:

        save_torch_atomic(to_reference_state_dict(model), out_dir / "afformer_finetuned.pth")


def hflip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Flip the samples of a batch whose ``flip`` is true along the last (width) axis."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(flip.view(shape), x.flip(-1), x)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    longest = max(len(s["frames"]) for s in samples)
    frames = torch.zeros(len(samples), longest, *samples[0]["frames"].shape[1:], dtype=torch.uint8)
    for i, s in enumerate(samples):
        frames[i, : len(s["frames"])] = s["frames"]
    return {
        "key": [s["key"] for s in samples],
        "frames": frames,
        "num_frames": torch.tensor([len(s["frames"]) for s in samples]),
        "image": torch.stack([s["image"] for s in samples]),
        "heatmaps": torch.stack([s["heatmaps"] for s in samples]),
        "actions": torch.stack([s["actions"] for s in samples]),
    }
