"""``maskahand ground VIDEO IMAGE --checkpoint CKPT --out overlay.png``: the authors' demo.py as a command.

The video (any container/length/resolution the :mod:`maskahand.video` reader takes, or a frame folder) is
cut into clips as the evaluation cuts it, every clip is predicted with the image, and the summed heatmap
is drawn over the target image at its own resolution. A model with an action head also gets its top
actions in the title (OPRA's action names when it has 7).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from maskahand.config import EvalRecipe
from maskahand.evaluation.opra import OPRA_ACTIONS

log = logging.getLogger(__name__)


def ground(
    video: str | Path,
    image: str | Path,
    checkpoint: str,
    out: str | Path,
    recipe: EvalRecipe,
    model: str = "afformer",
    top: int = 3,
) -> dict:
    from maskahand.evaluation.clips import load_clips, load_image
    from maskahand.evaluation.predictor import build_predictor
    from maskahand.shards.sheet import heatmap_overlay, save_image, titled
    from maskahand.trainer.distributed import resolve_device

    cfg = recipe.eval
    device = resolve_device(cfg.device)
    predictor = build_predictor(model, checkpoint, recipe, device)
    clips = load_clips(Path(video), cfg, recipe.video)
    square = load_image(Path(image), cfg.image_size)
    log.info("ground: %d clip(s) of %s (%s frames) on %s", len(clips), video, [len(c) for c in clips], image)
    pred = predictor(clips, square)
    heat = pred.heatmaps.float()
    lines, actions = [], []
    if pred.actions is not None:
        scores = pred.actions.float() / len(clips)  # the mean over clips
        names = OPRA_ACTIONS if len(scores) == len(OPRA_ACTIONS) else [str(i) for i in range(len(scores))]
        best = scores.topk(min(top, len(scores))).indices.tolist()
        actions = [(names[i], float(scores[i])) for i in best]
        lines.append("top actions: " + ", ".join(f"{n} {s:.2f}" for n, s in actions))
        heat = heat[best[0] : best[0] + 1] if heat.shape[0] == len(scores) else heat
    heat = heat.sum(0)
    full = _full_image(Path(image))
    h, w = full.shape[-2:]
    heat = torch.nn.functional.interpolate(
        heat[None, None], size=(h, w), mode="bilinear", align_corners=False
    )[0, 0]
    unit = (heat - heat.min()) / (heat.max() - heat.min() + 1e-12)
    picture = heatmap_overlay(full, unit)
    title = f"{Path(video).name} -> {Path(image).name}" + (f" | {lines[0]}" if lines else "")
    path = save_image(titled(picture, title, bar=max(16, h // 40)), out)
    peak = divmod(int(heat.argmax()), w)
    log.info(
        "ground: wrote %s (peak at x=%d, y=%d)%s", path, peak[1], peak[0], f"; {lines[0]}" if lines else ""
    )
    return {"out": str(path), "peak_xy": (peak[1], peak[0]), "actions": actions, "clips": len(clips)}


def _full_image(path: Path) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image

    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    return decode_image(data, mode=ImageReadMode.RGB)
