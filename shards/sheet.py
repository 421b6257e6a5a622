"""Contact-sheet helpers every stage reuses to show what it produced.

All helpers take uint8 RGB images as torch (3,H,W), numpy (H,W,3) or PIL, and return PIL images:

    cells = [draw_hands(f, hands) for f, hands in zip(frames, detections)]
    sheet = titled(grid(cells, cols=8, cell_side=160), "video.mp4 @ 5 fps")
    save_image(sheet, "sheet.png")

``hands`` are dicts ``{box, state, score}`` (shard meta) or objects with those attributes
(``maskahand.detector.Hand``); boxes are in the image's own pixels.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..core.fsutil import atomic_write_bytes

STATE_COLORS = {"contact": (40, 200, 60), "no_contact": (255, 150, 0), "unknown": (170, 170, 170)}
BOX_COLOR = (0, 170, 255)  # boxes without a hand state (e.g. mask boxes)
BACKGROUND = (24, 24, 24)
TEXT_COLOR = (235, 235, 235)


def to_pil(image: Any) -> Image.Image:
    """uint8 RGB torch (3,H,W) / numpy (H,W,3) / PIL -> PIL RGB image (a copy)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"expected a (3,H,W) image tensor, got {tuple(image.shape)}")
        image = image.detach().cpu().expand(3, -1, -1).permute(1, 2, 0).numpy()
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H,W,3) image, got {arr.dtype} {arr.shape}")
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


def _get(hand: Any, name: str, default: Any = None) -> Any:
    return hand.get(name, default) if isinstance(hand, dict) else getattr(hand, name, default)


def draw_boxes(
    image: Any, boxes: Iterable[Sequence[float]], color: tuple[int, int, int] = BOX_COLOR, width: int = 2
) -> Image.Image:
    """Plain rectangles (x1, y1, x2, y2) in image pixels."""
    img = to_pil(image)
    draw = ImageDraw.Draw(img)
    for box in boxes:
        draw.rectangle([float(v) for v in box], outline=color, width=width)
    return img


def draw_hands(image: Any, hands: Iterable[Any], width: int = 2) -> Image.Image:
    """Hand boxes coloured by state (contact green, no_contact orange, unknown grey) with their score."""
    img = to_pil(image)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for hand in hands:
        x1, y1, x2, y2 = (float(v) for v in _get(hand, "box"))
        color = STATE_COLORS.get(_get(hand, "state", "unknown"), STATE_COLORS["unknown"])
        draw.rectangle([x1, y1, x2, y2], outline=color, width=width)
        label = f"{_get(hand, 'score', 0.0):.2f}"
        tx, ty = x1 + 2, max(0.0, y1 - 11)
        draw.rectangle(draw.textbbox((tx, ty), label, font=font), fill=color)
        draw.text((tx, ty), label, fill=(0, 0, 0), font=font)
    return img


def heatmap_overlay(
    image: Any, heatmap: Any, alpha: float = 0.5, colormap: int = cv2.COLORMAP_JET
) -> Image.Image:
    """Blend a (H,W) heatmap in [0, 1] (resized to the image if needed) over the image with a colormap."""
    img = np.asarray(to_pil(image))
    h = (
        heatmap.detach().cpu().float().numpy()
        if isinstance(heatmap, torch.Tensor)
        else np.asarray(heatmap, np.float32)
    )
    if h.ndim != 2:
        raise ValueError(f"expected a (H,W) heatmap, got shape {h.shape}")
    if h.shape != img.shape[:2]:
        h = cv2.resize(h, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap((np.clip(h, 0, 1) * 255).astype(np.uint8), colormap)[:, :, ::-1]
    weight = alpha * np.clip(h, 0, 1)[:, :, None] ** 0.5  # keep cold regions close to the image
    out = img.astype(np.float32) * (1 - weight) + colored.astype(np.float32) * weight
    return Image.fromarray(out.round().astype(np.uint8), "RGB")


def fit(image: Image.Image, cell_side: int) -> Image.Image:
    """Resize so that the longer side is ``cell_side`` (aspect kept)."""
    w, h = image.size
    scale = cell_side / max(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)


def grid(images: Sequence[Any], cols: int = 8, cell_side: int = 160, pad: int = 2) -> Image.Image:
    """Images laid out row-major in cells of ``cell_side`` (longer side), centred, on a dark background."""
    if not images:
        raise ValueError("grid needs at least one image")
    cells = [fit(to_pil(im), cell_side) for im in images]
    cw = max(c.size[0] for c in cells)
    ch = max(c.size[1] for c in cells)
    cols = max(1, min(cols, len(cells)))
    rows = -(-len(cells) // cols)
    sheet = Image.new("RGB", (cols * (cw + pad) + pad, rows * (ch + pad) + pad), BACKGROUND)
    for i, c in enumerate(cells):
        x = pad + (i % cols) * (cw + pad) + (cw - c.size[0]) // 2
        y = pad + (i // cols) * (ch + pad) + (ch - c.size[1]) // 2
        sheet.paste(c, (x, y))
    return sheet


def titled(image: Any, text: str, bar: int = 16) -> Image.Image:
    """The image with a title bar above it."""
    img = to_pil(image)
    out = Image.new("RGB", (img.size[0], img.size[1] + bar), BACKGROUND)
    out.paste(img, (0, bar))
    ImageDraw.Draw(out).text((4, 2), text, fill=TEXT_COLOR, font=ImageFont.load_default())
    return out


def stack(images: Sequence[Any], pad: int = 4) -> Image.Image:
    """Images one below the other (left-aligned)."""
    pils = [to_pil(im) for im in images]
    if not pils:
        raise ValueError("stack needs at least one image")
    width = max(p.size[0] for p in pils)
    out = Image.new("RGB", (width, sum(p.size[1] for p in pils) + pad * (len(pils) - 1)), BACKGROUND)
    y = 0
    for p in pils:
        out.paste(p, (0, y))
        y += p.size[1] + pad
    return out


def save_image(image: Any, path: str | Path) -> Path:
    """Write an image atomically; the format follows the suffix (.png, .jpg)."""
    path = Path(path)
    buf = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    to_pil(image).save(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())
    return path
