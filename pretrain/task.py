"""MaskAHand pretraining as a :class:`~maskahand.trainer.TrainTask` (seed 002 section 4.2).

Each sample is a clip (video) and one synthesized target (image); the model predicts where the
interacting hand was on the target; the loss is the heatmap KL divergence of equation 11. The model
is action-agnostic (1 heatmap, no action head).

Two sources of targets:

- stored MaskAHand shards (``--shards``): K targets per clip; each step uses one per sample, chosen
  by :func:`draw_variants` from (seed, step, clip key), so a resumed run draws the same ones;
- clip shards (``--clips``): a fresh target per sample and step, synthesized on the training device
  with ``synth.recipe`` (variant index = the step), so no two steps see the same target; the same
  seed gives the same targets.

Frames and targets travel to the device as uint8; the encoder applies the ImageNet normalisation there.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..afformer import build_model
from ..afformer.actckpt import enable_activation_checkpointing
from ..afformer.model import GroundingModel
from ..afformer.param_groups import afformer_param_groups
from ..core.config import OptimConfig, PretrainRecipe, SynthConfig
from ..runtime.atomic import save_torch_atomic
from ..shards import clip_dataset, list_shards, maskahand_dataset
from ..synth import recipe as rc
from ..synth.recipe import interacting_hands
from ..trainer import TrainTask, unwrap
from .data import EpochBatches, PositionRecord, epoch_loader, pad_collate, uniform_indices

log = logging.getLogger(__name__)

EXPORT_NAME = "afformer_maskahand.pth"


def draw_variants(seed: int, step: int, keys: list[str], variants: int) -> list[int]:
    """Which of the K stored targets each sample uses at ``step``: a function of (seed, step, key) only."""
    out = []
    for key in keys:
        digest = hashlib.sha256(f"{seed}\x00{step}\x00{key}".encode()).digest()
        out.append(int.from_bytes(digest[:8], "little") % variants)
    return out


def normalise_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> each map sums to 1 (an all-zero map stays zero and is left out of the loss)."""
    flat = heatmaps.float().clamp_min(0).flatten(1)
    mass = flat.sum(1, keepdim=True)
    return (flat / mass.clamp_min(torch.finfo(flat.dtype).tiny)).view_as(heatmaps)


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, size, size); a no-op at that size already."""
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.round().clamp(0, 255).to(torch.uint8)


def resize_heatmaps(heatmaps: torch.Tensor, size: int) -> torch.Tensor:
    if heatmaps.shape[-2:] == (size, size):
        return heatmaps
    return F.interpolate(heatmaps.float(), size=(size, size), mode="area")


def expand_shards(sources: list[str] | None) -> list[str] | None:
    """Folders, files or brace patterns -> one list of shard paths (errors name the bad source)."""
    if not sources:
        return None

    return [url for src in sources for url in list_shards(src)]


class PretrainTask(TrainTask):
    """``shards``: MaskAHand shard folders/files; or ``clips``: clip shards with on-the-fly synthesis."""

    def __init__(
        self,
        recipe: PretrainRecipe,
        shards: list[str] | None = None,
        clips: list[str] | None = None,
        synth: SynthConfig | None = None,
        val_shards: list[str] | None = None,
    ):
        if bool(shards) == bool(clips):
            raise ValueError("pretraining needs either --shards (MaskAHand shards) or --clips (clip shards)")
        self.recipe = recipe
        self.shards, self.clips = expand_shards(shards), expand_shards(clips)
        self.synth = synth or recipe.synth
        self.val_shards = expand_shards(val_shards)
        self.image_size = recipe.model.image_size
        self.positions = PositionRecord()  # this rank's data position, saved for an exact resume

    # -- model ------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:

        cfg = self.recipe.model
        if cfg.num_heatmaps != 1 or cfg.num_actions != 0:
            log.warning(
                "MaskAHand pretraining is action-agnostic; model.num_heatmaps=%d model.num_actions=%d "
                "(paper: 1 and 0)",
                cfg.num_heatmaps,
                cfg.num_actions,
            )
        if not cfg.backbone_weights:
            log.warning(
                "model.backbone_weights is not set: the encoder starts from RANDOM weights (the paper "
                "starts from torchvision's COCO fasterrcnn_resnet50_fpn_v2 checkpoint)"
            )
        return build_model(cfg)

    def param_groups(self, model: nn.Module, optim: OptimConfig) -> list[dict]:
        """Afformer's groups (the authors' rules: encoder at lr x ``model.backbone_lr_factor``, no weight
        decay on normalisation layers; ViTDet: layer-wise lr decay)."""
        return afformer_param_groups(unwrap(model), optim)

    def enable_activation_checkpointing(self, model: nn.Module) -> None:
        """``train.activation_checkpointing``: recompute the encoder and decoder blocks in backward."""
        enable_activation_checkpointing(unwrap(model))

    # -- data -------------------------------------------------------------------------------------
    def _prepare_maskahand(self, sample: Any) -> Any:
        t = sample.frames.shape[0]
        keep = uniform_indices(t, self.recipe.train.num_frames)
        if len(keep) != t:
            sample.frames = sample.frames[keep]
        sample.frames = resize_square(sample.frames, self.image_size)  # shards made at another size
        return sample

    def _prepare_clip(self, sample: Any) -> Any:

        if not interacting_hands(sample.meta):
            log.debug("clip %s has no interacting hand box: not used for pretraining", sample.key)
            return None
        keep = uniform_indices(sample.frames.shape[0], self.recipe.train.num_frames)
        # the source frames stay on the CPU (numpy, so the engine does not move them); the target is
        # drawn from them at the step, the video input is resized now
        sample.source = sample.frames.numpy()
        sample.frames = resize_square(sample.frames[keep], self.image_size)
        return sample

    def _make_dataset(self, rank: int, world_size: int, seed: int) -> Any:

        make = maskahand_dataset if self.shards else clip_dataset
        return make(
            self.shards or self.clips or [],
            shuffle=0,  # the sample buffer is EpochBatches' (resumable); shard order and interleaving here
            shuffle_shards=True,
            open_shards=self.recipe.train.open_shards,
            rank=rank,
            world_size=world_size,
            seed=seed,
        )

    def train_batches(self, epoch: int, skip: int) -> Any:
        train = self.recipe.train
        raw_skips, first_worker = self.positions.resume(
            epoch, skip, max(1, train.workers), self.ctx.micro_batch
        )
        clips_mode = bool(self.clips)
        ds = EpochBatches(
            self._make_dataset,
            epoch,
            skip,
            self.ctx.micro_batch,
            train.shuffle,
            train.seed,
            self._prepare_clip if clips_mode else self._prepare_maskahand,
            _collate_clips if clips_mode else pad_collate,
            self.ctx.rank,
            self.ctx.world_size,
            raw_skips=raw_skips,
        )
        return epoch_loader(ds, train.workers, self.ctx.device.type == "cuda", first_worker)

    # -- step -------------------------------------------------------------------------------------
    def targets_for_step(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, 3, S, S) targets and (B, 1, S, S) heatmaps summing to 1, at the model's size."""
        size = self.image_size
        if "targets" in batch:
            keys = batch["key"]
            pick = torch.tensor(
                draw_variants(self.recipe.train.seed, step, keys, batch["targets"].shape[1]),
                device=batch["targets"].device,
            )
            rows = torch.arange(len(keys), device=pick.device)
            targets = batch["targets"][rows, pick]
            heatmaps = batch["heatmaps"][rows, pick][:, None]
        else:
            targets, heatmaps = self._synthesize(batch, step)
        return resize_square(targets, size), normalise_heatmaps(resize_heatmaps(heatmaps, size))

    def _synthesize(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, torch.Tensor]:

        cfg = self.synth
        device = batch["frames"].device
        params = [rc.sample_params(cfg, key, meta, step) for key, meta in zip(batch["key"], batch["meta"])]
        chosen = [torch.from_numpy(src[p["frame"]]).to(device) for src, p in zip(batch["source"], params)]
        targets, heatmaps = rc.render_grouped(chosen, params, cfg.batch_size)
        return torch.stack(targets), torch.stack(heatmaps)[:, None]

    def batch_sources(self, batch: dict[str, Any]) -> list[str]:
        """The source video of each sample (the engine logs how many distinct ones a global batch holds)."""
        return [str(meta.get("video_id", key)) for key, meta in zip(batch["key"], batch["meta"])]

    def state_dict(self) -> dict[str, Any]:
        return {"data_position": self.positions.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "data_position" in state:
            self.positions.load_state_dict(state["data_position"])

    def training_step(self, model: nn.Module, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict]:
        if "positions" in batch:  # every batch training takes passes here exactly once
            self.positions.note(batch.pop("positions"))
        targets, heatmaps = self.targets_for_step(batch, step)
        out = model(batch["frames"], targets, batch["num_frames"])
        loss = cast(GroundingModel, unwrap(model)).loss(out, heatmaps).heatmap
        return loss, {"kld": loss.detach()}

    # -- evaluation, pictures, export -------------------------------------------------------------
    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        if not self.val_shards:
            return {}
        # deferred: import cycle with maskahand.pretrain.evaluate
        from .evaluate import pretext_kld

        return {"val_kld": pretext_kld(model, self.val_shards, self.recipe, self.ctx.device)}

    def visualize(self, model: nn.Module, batch: dict[str, Any], step: int) -> np.ndarray | None:
        # deferred: import cycle with maskahand.pretrain.evaluate
        from .evaluate import overlay_row

        with torch.no_grad():
            targets, heatmaps = self.targets_for_step({k: v[:1] for k, v in batch.items()}, step)
            was = model.training
            model.eval()
            pred = model.predict(batch["frames"][:1], targets, batch["num_frames"][:1]).heatmaps  # type: ignore[operator]
            model.train(was)
        n = int(batch["num_frames"][0])
        return overlay_row(batch["frames"][0, n // 2], targets[0], pred[0, 0], heatmaps[0, 0])

    def export(self, model: nn.Module, out_dir: Path) -> None:

        # deferred: import cycle with maskahand.pretrain.evaluate
        from .evaluate import authors_state_dict

        save_torch_atomic(authors_state_dict(model), out_dir / EXPORT_NAME)
        log.info("exported the final weights in the authors' layout: %s", out_dir / EXPORT_NAME)


def _collate_clips(samples: list[Any]) -> dict[str, Any]:
    batch = pad_collate(samples, fields=())
    batch["source"] = [s.source for s in samples]
    return batch
