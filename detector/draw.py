"""``maskahand detector run``: draw detected hands (box, state, score) on an image or a video."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch

from ..core.config import DetectorRecipe
from ..core.fsutil import atomic_path, atomic_write_bytes
from ..video import open_video
from .base import Hand, HandDetector

STATE_COLORS = {"contact": (230, 40, 40), "no_contact": (40, 200, 60), "unknown": (250, 200, 0)}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def draw_hands(image: torch.Tensor, hands: Sequence[Hand]) -> torch.Tensor:
    """uint8 (3, H, W) with each hand's box, state and score drawn on it."""
    # deferred: torchvision at import
    from torchvision.utils import draw_bounding_boxes

    if not hands:
        return image.clone()
    h, w = image.shape[-2:]
    width = max(2, round(max(h, w) / 300))
    boxes = torch.tensor([hand.box for hand in hands], dtype=torch.float32)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
    labels = [f"{hand.state} {hand.score:.2f}" for hand in hands]
    colors = [STATE_COLORS[hand.state] for hand in hands]
    font = _font_path()
    return draw_bounding_boxes(
        image,
        boxes,
        labels=labels,
        colors=colors,
        width=width,
        font=font,
        font_size=max(12, round(max(h, w) / 40)) if font else None,
    )


def _font_path() -> str | None:
    """A TrueType font for readable labels (matplotlib ships DejaVu Sans); None: PIL's tiny default."""

    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return str(path) if path.is_file() else None


def annotate_image(detector: HandDetector, src: Path, out: Path) -> list[Hand]:
    # deferred: torchvision at import
    from torchvision.io import ImageReadMode, decode_image, encode_jpeg, encode_png

    try:
        image = decode_image(str(src), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError) as e:
        raise ValueError(f"{src}: cannot decode image: {e}") from e
    hands = detector.detect([image], video_id=src.stem, frame_indices=[0])[0]
    drawn = draw_hands(image, hands)
    suffix = out.suffix.lower()
    if suffix == ".png":
        data = encode_png(drawn)
    elif suffix in (".jpg", ".jpeg"):
        data = encode_jpeg(drawn, quality=92)
    else:
        raise ValueError(f"--out {out}: an image is written as .png or .jpg")
    atomic_write_bytes(out, data.numpy().tobytes())
    return hands


def annotate_video(detector: HandDetector, src: Path, out: Path, recipe: DetectorRecipe) -> int:
    """Detect on frames sampled at ``video.fps`` and encode them with drawings to an H.264 mp4."""
    # deferred: av, tqdm at import
    import av
    from tqdm import tqdm

    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out {out}: a video is written as .mp4")
    reader = open_video(src, recipe.video)
    info = reader.info
    count = 0
    rate = max(1, round(min(recipe.video.fps, info.fps or recipe.video.fps)))
    total = round(info.duration * min(recipe.video.fps, info.fps)) + 1 if info.duration and info.fps else None
    video_id = src.name
    with atomic_path(out, suffix=".mp4") as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = None
            bar = tqdm(total=total, desc=f"detect {src.name}", unit="frame")
            for batch in reader.batches(max(1, detector.batch_size)):
                hands = detector.detect(batch.frames, video_id=video_id, frame_indices=batch.indices)
                for frame, frame_hands in zip(batch.frames, hands):
                    drawn = draw_hands(frame, frame_hands)
                    h, w = (drawn.shape[1] // 2) * 2, (drawn.shape[2] // 2) * 2  # yuv420p needs even sizes
                    if stream is None:
                        stream = container.add_stream("libx264", rate=rate)
                        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    rgb = drawn[:, :h, :w].permute(1, 2, 0).contiguous().numpy()
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
                    count += 1
                bar.update(len(batch.indices))
            bar.close()
            if stream is not None:
                container.mux(stream.encode(None))
        if count == 0:
            raise ValueError(f"{src}: no frames were decoded")
    return count


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES
