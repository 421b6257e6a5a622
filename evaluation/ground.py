"""``maskahand ground VIDEO IMAGE --checkpoint CKPT --out overlay.png|.mp4|.webm|.gif``: the authors' demo.py.

The video (any container/length/resolution the :mod:`maskahand.video` reader takes, or a frame folder) is
predicted with the target image. ``--out *.png`` (or .jpg): the clips cut as the evaluation cuts them, the
summed heatmap drawn over the target image at its own resolution. ``--out *.mp4 / .webm / .gif``: a moving
overlay, the video beside the image with the heatmap of the current sliding window (the demo's windowing,
:mod:`maskahand.evaluation.overlay`). A model with an action head also gets its top actions (OPRA's action
names when it has 7).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..core import storage
from ..core.config import EvalRecipe
from ..runtime.distributed import resolve_device
from .benchmark import Location, location
from .clips import load_clips, load_image, read_image_bytes
from .opra import OPRA_ACTIONS
from .overlay import VIDEO_FORMATS, predict_windows, sampled_frames, write_overlay_video
from .predictor import build_predictor

log = logging.getLogger(__name__)
IMAGE_FORMATS = (".png", ".jpg", ".jpeg")


def output_kind(out: str | Path) -> str:
    """ "image" or "video" by the suffix of ``out``; anything else is a ValueError naming it."""
    suffix = Path(out).suffix.lower()
    if suffix in IMAGE_FORMATS:
        return "image"
    if suffix in VIDEO_FORMATS:
        return "video"
    raise ValueError(
        f"--out {out}: write a picture ({', '.join(IMAGE_FORMATS)}) or an overlay video "
        f"({', '.join(VIDEO_FORMATS)})"
    )


def ground(
    video: str | Path,
    image: str | Path,
    checkpoint: str,
    out: str | Path,
    recipe: EvalRecipe,
    model: str = "afformer",
    top: int = 3,
) -> dict:

    output_kind(out)
    predictor = build_predictor(model, checkpoint, recipe, resolve_device(recipe.eval.device))
    if output_kind(out) == "video":
        return ground_video(predictor, location(video), location(image), Path(out), recipe, top)
    return ground_image(predictor, location(video), location(image), Path(out), recipe, top)


def ground_image(
    predictor,
    video: Location,
    image: Location,
    out: Path,
    recipe: EvalRecipe,
    top: int = 3,
    title: bool = True,
) -> dict:
    """The summed map of every evaluation clip over the target image, written to ``out`` (PNG/JPEG);
    ``title=False`` leaves out the title bar (the picture then has the image's own size)."""
    # deferred: cv2 at import
    from ..shards.sheet import heatmap_overlay, save_image, titled

    cfg = recipe.eval
    clips = load_clips(video, cfg, recipe.video)
    square = load_image(image, cfg.image_size)
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
    full = full_image(image)
    h, w = full.shape[-2:]
    heat = torch.nn.functional.interpolate(
        heat[None, None], size=(h, w), mode="bilinear", align_corners=False
    )[0, 0]
    unit = (heat - heat.min()) / (heat.max() - heat.min() + 1e-12)
    picture = heatmap_overlay(full, unit)
    if title:
        text = f"{storage.name_of(video)} -> {storage.name_of(image)}" + (f" | {lines[0]}" if lines else "")
        picture = titled(picture, text, bar=max(16, h // 40))
    path = save_image(picture, out)
    peak = divmod(int(heat.argmax()), w)
    log.info(
        "ground: wrote %s (peak at x=%d, y=%d)%s", path, peak[1], peak[0], f"; {lines[0]}" if lines else ""
    )
    return {"out": str(path), "peak_xy": (peak[1], peak[0]), "actions": actions, "clips": len(clips)}


def ground_video(
    predictor,
    video: Location,
    image: Location,
    out: Path,
    recipe: EvalRecipe,
    top: int = 3,
    progress: bool = True,
    title: str | None = None,
) -> dict:
    """The moving overlay (see :mod:`maskahand.evaluation.overlay`) written to ``out`` (.mp4/.webm/.gif)."""

    cfg = recipe.eval
    square = load_image(image, cfg.image_size)
    frames = sampled_frames(video, cfg, recipe.video)
    maps = predict_windows(predictor, frames, square, cfg, top, progress=progress)
    log.info(
        "ground: %d window(s) of %s (%d frames at %g fps, length %d, stride %d) on %s",
        len(maps.windows), video, len(frames), cfg.clip_fps, cfg.clip_length, cfg.clip_stride, image,
    )  # fmt: skip
    text = title if title is not None else f"{storage.name_of(video)} -> {storage.name_of(image)}"
    count = write_overlay_video(
        video, full_image(image), maps, out, cfg, recipe.video, text, progress=progress
    )
    log.info(
        "ground: wrote %s (%d frames at %g fps, %d windows)", out, count, cfg.overlay_fps, len(maps.windows)
    )
    return {"out": str(out), "frames": count, "windows": maps.windows, "actions": maps.actions}


def full_image(path: Location) -> torch.Tensor:
    """uint8 (3, H, W) RGB at the file's own size (a file or a URL); errors name the file."""
    # deferred: torchvision at import
    from torchvision.io import ImageReadMode, decode_image

    data = torch.frombuffer(bytearray(read_image_bytes(path)), dtype=torch.uint8)
    try:
        return decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None
