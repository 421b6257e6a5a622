"""The moving overlay of ``maskahand ground ... --out overlay.mp4|.webm|.gif``.

Windowing follows the authors' ``demo.py``: the video sampled at ``eval.clip_fps``, a window of at most
``eval.clip_length`` sampled frames starting every ``eval.clip_stride`` frames from the first, while the
start is inside the video (no extra remainder window: that is the evaluation's rule, kept for the PNG).
Each window is predicted alone. Every frame of the output shows the video (left, at ``eval.overlay_fps``)
beside the target image with the heatmap of the window that frame falls in (the latest window started at
or before it); a fine-tuned model's map is that window's top-1 action's and the window's top actions are
listed. All maps share one colour scale (0 to the largest per-pixel probability over the windows), drawn
as a colour bar, so a brighter window is a more confident one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..core.config import EvalConfig, VideoConfig
from ..core.fsutil import atomic_path
from ..video import open_video
from .clips import resize_square
from .opra import OPRA_ACTIONS

log = logging.getLogger(__name__)

# suffix -> (container format, codec, pixel format); browsers play .webm (VP9) and .mp4 (H.264)
VIDEO_FORMATS = {
    ".mp4": ("mp4", "libx264", "yuv420p"),
    ".webm": ("webm", "libvpx-vp9", "yuv420p"),
    ".gif": ("gif", "gif", "rgb8"),
}
BAR_WIDTH = 14  # colour bar
LABEL_WIDTH = 52  # room for the colour bar's labels
TEXT_LINES = 2


def demo_windows(n: int, length: int, stride: int) -> list[tuple[int, int]]:
    """[start, stop) windows over ``n`` sampled frames as the authors' demo cuts them."""
    return [(s, min(s + length, n)) for s in range(0, max(n, 0), stride)]


def window_at(k: int, stride: int, count: int) -> int:
    """Index of the window shown with sampled frame ``k``: the latest one started at or before it."""
    return min(max(k, 0) // stride, count - 1)


@dataclass
class WindowMaps:
    windows: list[tuple[int, int]]  # [start, stop) in frames sampled at clip_fps
    heat: torch.Tensor  # (num_windows, h, w) float, the map shown for each window
    actions: list[list[tuple[str, float]]] | None  # per window, its top actions (name, probability)


def predict_windows(
    predictor, frames: torch.Tensor, image: torch.Tensor, cfg: EvalConfig, top: int, progress: bool = True
) -> WindowMaps:
    """Predict every demo window of ``frames`` (uint8 (T, 3, S, S) at clip_fps) alone."""
    # deferred: tqdm at import
    from tqdm import tqdm

    windows = demo_windows(len(frames), cfg.clip_length, cfg.clip_stride)
    heats: list[torch.Tensor] = []
    actions: list[list[tuple[str, float]]] = []
    for a, b in tqdm(windows, desc="ground: windows", unit="window", disable=not progress):
        pred = predictor([frames[a:b]], image)
        heat = pred.heatmaps.float()
        if pred.actions is None:
            heats.append(heat.sum(0))
            continue
        scores = pred.actions.float()
        names = OPRA_ACTIONS if len(scores) == len(OPRA_ACTIONS) else [str(i) for i in range(len(scores))]
        best = scores.topk(min(top, len(scores))).indices.tolist()
        actions.append([(names[i], float(scores[i])) for i in best])
        heats.append(heat[best[0]] if heat.shape[0] == len(scores) else heat.sum(0))
    return WindowMaps(windows, torch.stack(heats), actions if actions else None)


def sampled_frames(path: Path | str, cfg: EvalConfig, video: VideoConfig) -> torch.Tensor:
    """The whole video at ``clip_fps``, uint8 (T, 3, S, S) (the model's input size)."""

    reader = open_video(path, replace(video, fps=cfg.clip_fps, max_side=None))
    frames = [resize_square(b.frames, cfg.image_size) for b in reader.batches(16)]
    if not frames:
        raise ValueError(f"{path}: no decodable frames")
    return torch.cat(frames)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def colour_bar(height: int, vmax: float, font, size: int) -> Image.Image:
    """A vertical jet bar (1 at the top) with its scale: 0 and ``vmax`` (per-pixel probability)."""
    # deferred: cv2 at import
    import cv2

    ramp = np.linspace(255, 0, height).astype(np.uint8)[:, None].repeat(BAR_WIDTH, 1)
    rgb = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)[:, :, ::-1]
    out = Image.new("RGB", (BAR_WIDTH + LABEL_WIDTH, height), (255, 255, 255))
    out.paste(Image.fromarray(np.ascontiguousarray(rgb), "RGB"), (0, 0))
    draw = ImageDraw.Draw(out)
    draw.text((BAR_WIDTH + 3, 0), f"{vmax:.2g}", fill=(0, 0, 0), font=font)
    draw.text((BAR_WIDTH + 3, height - size - 4), "0", fill=(0, 0, 0), font=font)
    return out


class OverlayPainter:
    """Paints output frames: video frame | image with the window's heatmap | colour bar, text above."""

    def __init__(self, image: torch.Tensor, maps: WindowMaps, height: int, video_aspect: float, title: str):
        # deferred: cv2 at import
        from ..shards.sheet import heatmap_overlay

        self.height = height
        size = max(10, height // 22)
        self.font = _font(size)
        self.line = size + 4
        self.top = self.line * TEXT_LINES + 4
        self.video_width = max(2, round(height * video_aspect))
        ih, iw = image.shape[-2:]
        self.image_width = max(2, round(height * iw / ih))
        picture = Image.fromarray(image.permute(1, 2, 0).numpy(), "RGB").resize(
            (self.image_width, height), Image.Resampling.BILINEAR
        )
        self.vmax = float(maps.heat.max()) if maps.heat.numel() else 0.0
        scale = self.vmax if self.vmax > 0 else 1.0
        small = torch.nn.functional.interpolate(
            maps.heat[:, None], size=(height, self.image_width), mode="bilinear", align_corners=False
        )[:, 0]
        self.panels = [heatmap_overlay(picture, (m / scale).clamp(0, 1)) for m in small]
        self.bar = colour_bar(height, self.vmax, self.font, size)
        width = self.video_width + self.image_width + self.bar.size[0]
        self.size = (width + width % 2, self.top + height + (self.top + height) % 2)  # even: yuv420p
        self.maps = maps
        self.title = title

    def paint(self, frame: torch.Tensor, window: int, seconds: float) -> np.ndarray:
        canvas = Image.new("RGB", self.size, (255, 255, 255))
        video = Image.fromarray(frame.permute(1, 2, 0).contiguous().numpy(), "RGB")
        canvas.paste(video.resize((self.video_width, self.height), Image.Resampling.BILINEAR), (0, self.top))
        canvas.paste(self.panels[window], (self.video_width, self.top))
        canvas.paste(self.bar, (self.video_width + self.image_width, self.top))
        a, b = self.maps.windows[window]
        lines = [
            f"{self.title}   t={seconds:5.1f}s   window {window + 1}/{len(self.maps.windows)} "
            f"(sampled frames {a}-{b - 1})",
            "top actions: " + ", ".join(f"{n} {s:.2f}" for n, s in self.maps.actions[window])
            if self.maps.actions
            else "zero-shot: one action-agnostic map",
        ]
        draw = ImageDraw.Draw(canvas)
        for i, text in enumerate(lines):
            draw.text((4, 2 + i * self.line), text, fill=(0, 0, 0), font=self.font)
        return np.asarray(canvas)


def write_overlay_video(
    video: Path | str,
    image: torch.Tensor,
    maps: WindowMaps,
    out: Path,
    cfg: EvalConfig,
    vcfg: VideoConfig,
    title: str,
    progress: bool = True,
    on_frame: Callable[[int], None] | None = None,
) -> int:
    """Encode the overlay of ``video`` (decoded again at ``eval.overlay_fps``) to ``out``; frames written."""
    # deferred: av, tqdm at import
    import av
    from tqdm import tqdm

    suffix = out.suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise ValueError(f"--out {out}: an overlay video is written as {', '.join(VIDEO_FORMATS)}")
    fmt, codec, pix_fmt = VIDEO_FORMATS[suffix]
    reader = open_video(video, replace(vcfg, fps=cfg.overlay_fps, max_side=None))
    info = reader.info
    aspect = (info.frame_width or info.width) / max(1, info.frame_height or info.height)
    painter = OverlayPainter(image, maps, cfg.overlay_height, aspect, title)
    stride, count = cfg.clip_stride, len(maps.windows)
    rate = Fraction(cfg.overlay_fps).limit_denominator(1000)
    total = (
        round(info.duration * min(cfg.overlay_fps, info.fps or cfg.overlay_fps)) if info.duration else None
    )
    written = 0
    with atomic_path(out, suffix=suffix) as tmp:
        with av.open(str(tmp), mode="w", format=fmt) as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height = painter.size
            stream.pix_fmt = pix_fmt
            bar = tqdm(total=total, desc="ground: overlay", unit="frame", disable=not progress)
            for frame in reader:
                k = int(frame.pts * cfg.clip_fps + 1e-6)
                rgb = painter.paint(frame.image, window_at(k, stride, count), frame.pts)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
                written += 1
                bar.update(1)
                if on_frame is not None:
                    on_frame(written)
            bar.close()
            container.mux(stream.encode(None))
        if written == 0:
            raise ValueError(f"{video}: no decodable frames")
    return written
