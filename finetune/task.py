"""Supervised fine-tuning of Afformer on a benchmark, as a :class:`~maskahand.trainer.TrainTask`.

The authors' OPRA recipe (``configs/opra/r50fpn.yaml`` + seed 002), the same for every dataset: one
heatmap per action + the action head, 256 x 256 inputs, horizontal flip of image, video and heatmaps with
p = 0.5, AdamW 3e-4 / 0.05 with the encoder at x0.1, cosine, 16-bit mixed precision, batch 16, 4k steps,
evaluation every 1000 steps. A sample is one entry with one of its video's clips (clips cut as the
evaluation cuts them: 32 frames at 2 fps, stride 16; the clip is drawn from (seed, epoch, entry));
its target is the authors' training ground truth: per distinct action the points set to 1, +1e-10,
blurred (kernel sqrt(h*w)/3), zero channels for the other actions, and the multi-hot action vector.

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

from maskahand.afformer.model import GroundingModel
from maskahand.config import FinetuneRecipe
from maskahand.evaluation.benchmark import Benchmark, Entry, MediaError
from maskahand.trainer import TrainTask, unwrap
from maskahand.trainer.task import step_generator

log = logging.getLogger(__name__)
HEAD_PREFIX = "predictor."


def load_init(model: nn.Module, checkpoint: str) -> list[str]:
    """Load ``checkpoint`` into ``model``; tensors of the heads that do not fit (a pretrained 1-heatmap
    model into a per-action one) stay freshly initialised. Returns those names; anything else that does
    not fit is an error."""
    from maskahand.afformer import from_reference_name, load_reference_checkpoint
    from maskahand.trainer.checkpoint import FORMAT, load_torch_file

    raw = load_torch_file(checkpoint, "initial checkpoint")
    state = raw["model"] if isinstance(raw, dict) and raw.get("format") == FORMAT else raw
    report = load_reference_checkpoint(model, state, strict=False)
    names = report.missing + [m.split(":")[0] for m in report.shape_mismatch]
    ours = [n if n in model.state_dict() else from_reference_name(n) for n in names]
    bad = [n for n in ours if not n.startswith(HEAD_PREFIX)] + report.unexpected
    if bad:
        raise ValueError(f"{checkpoint}: does not fit the model beyond its heads: {report.describe()}")
    if ours:
        log.warning("init from %s: re-initialised the heads: %s", checkpoint, ", ".join(sorted(ours)))
    else:
        log.info("init from %s: every tensor loaded", checkpoint)
    return sorted(ours)


def training_target(entry: Entry, num_actions: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(num_actions, size, size) heatmaps (zeros for absent actions) and the (num_actions,) multi-hot."""
    from maskahand.evaluation.metrics import gt_map_256

    heat = torch.zeros(num_actions, size, size)
    hot = torch.zeros(num_actions)
    for a in entry.distinct_actions:
        g = gt_map_256(entry.points_of(a), entry.height, entry.width).float()
        if g.shape != (size, size):
            g = F.interpolate(g[None, None], size=(size, size), mode="area")[0, 0]
        heat[a] = g
        hot[a] = 1.0
    return heat, hot


def box_target(bench: Benchmark, entry: Entry, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """AssistQ: the filled button boxes at ``size`` (one channel) and a single "press" action."""
    from PIL import Image

    from maskahand.evaluation.assistq import box_map

    with Image.open(bench.resolve(entry.image)) as im:
        heat = box_map(entry.extra["boxes"], im.size, size).float()
    return heat[None], torch.ones(1)


class FinetuneTask(TrainTask):
    def __init__(self, recipe: FinetuneRecipe, train: Benchmark, val: Benchmark | None, init: str):
        self.recipe = recipe
        self.bench = train
        self.val = val
        self.init = init
        self.size = recipe.model.image_size

    def build_model(self) -> nn.Module:
        from maskahand.afformer import build_model

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

    # -- data -------------------------------------------------------------------------------------
    def sample(self, entry: Entry, gen: torch.Generator) -> dict[str, Any]:
        from maskahand.evaluation.clips import clip_span, load_clips, load_image
        from maskahand.pretrain.data import uniform_indices

        cfg = replace(self.recipe.eval, image_size=self.size)
        try:
            image = load_image(self.bench.resolve(entry.image), self.size)
            if "frames" in entry.extra:  # AssistQ: the entry's frame list is its one clip
                from maskahand.evaluation.clips import load_frame_list

                clips = [load_frame_list([self.bench.resolve(f) for f in entry.extra["frames"]], self.size)]
            else:
                span = clip_span(entry.extra)  # an EPIC clip: a frame range of its video's folder
                clips = load_clips(self.bench.resolve(entry.video), cfg, self.recipe.video, frame_range=span)
        except Exception as e:  # noqa: BLE001 - video, image and OS errors alike
            raise MediaError(f"{self.bench.annotations}: {entry.describe()}: {e}") from e
        clip = clips[int(torch.randint(len(clips), (1,), generator=gen))]
        keep = uniform_indices(len(clip), self.recipe.train.num_frames)
        if self.bench.gt_rule == "boxes":
            heat, hot = box_target(self.bench, entry, self.size)
        else:
            heat, hot = training_target(entry, self.bench.num_actions, self.size)
        return {
            "key": str(entry.index),
            "frames": clip[keep],
            "image": image,
            "heatmaps": heat,
            "actions": hot,
        }

    def train_batches(self, epoch: int, skip: int):
        ctx, train = self.ctx, self.recipe.train
        mine = [e for e in self.bench.entries if e.index % ctx.world_size == ctx.rank]
        order = torch.randperm(len(mine), generator=step_generator(train.seed, epoch, ctx.rank, stream=1))
        size = ctx.micro_batch  # train.batch_size is the global batch
        batches = len(mine) // size  # drop_last, as the authors
        for b in range(skip, batches):
            picked = [mine[int(i)] for i in order[b * size : (b + 1) * size]]
            gen = step_generator(train.seed, epoch * 1_000_003 + b, ctx.rank, stream=2)
            yield collate([self.sample(e, gen) for e in picked])

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
        terms = cast(GroundingModel, unwrap(model)).loss(out, heat, batch["actions"])
        scalars = {"kld": terms.heatmap.detach()}
        if terms.action is not None:
            scalars["action_bce"] = terms.action.detach()
        return terms.total, scalars

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        if self.val is None:
            return {}
        from maskahand.evaluation.afformer_predictor import AfformerPredictor
        from maskahand.evaluation.evaluate import run_eval

        net = cast(GroundingModel, unwrap(model))
        was = net.training
        net.eval()
        pred = AfformerPredictor(net, net.cfg, self.ctx.device, self.recipe.eval.clip_batch)
        result = run_eval(
            self.val, pred, ["256"], replace(self.recipe.eval, image_size=self.size), progress=False
        )
        net.train(was)
        if result is None or result.scores256 is None:
            return {}
        s = result.scores256
        out = {"val_kld": s.kld, "val_sim": s.sim}
        if s.auc_j is not None:
            out["val_auc_j"] = s.auc_j
        if s.top1 is not None:
            out["val_top1"] = s.top1
        return out

    def export(self, model: nn.Module, out_dir: Path) -> None:
        import io

        from maskahand.afformer import to_reference_state_dict
        from maskahand.fsutil import atomic_write_bytes

        buf = io.BytesIO()
        torch.save(to_reference_state_dict(model), buf)
        atomic_write_bytes(out_dir / "afformer_finetuned.pth", buf.getvalue())


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
