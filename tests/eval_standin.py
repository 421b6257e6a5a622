"""A stand-in OPRA tree for the evaluation and fine-tuning tests: a subset of the real test annotations,
with images and clips (real video frames, re-encoded) that the tests write in the authors' layout."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
from PIL import Image


def pick_entries(annotations: list[dict], images: int = 3, max_entries: int = 6) -> list[dict]:
    """Entries of the first ``images`` images (file order), at most ``max_entries``; one of them with
    two actions when the subset allows it."""
    chosen_images: list[str] = []
    out: list[dict] = []
    for e in annotations:
        if e["image_path"] not in chosen_images:
            if len(chosen_images) == images:
                continue
            chosen_images.append(e["image_path"])
        out.append(e)
        if len(out) == max_entries:
            break
    return out


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "20"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def source_frames(video: Path, n: int, size: int = 128) -> list[np.ndarray]:
    out = []
    with av.open(str(video)) as c:
        for frame in c.decode(video=0):
            out.append(np.asarray(frame.to_image().resize((size, size))))
            if len(out) == n:
                break
    return out


def make_opra_tree(root: Path, shared: Path, entries: list[dict], clip_frames: int = 6) -> Path:
    """ROOT/annotations/{train,test}.json, ROOT/images/..., ROOT/clips/... for ``entries``."""
    frames = source_frames(shared / "videos" / "hands_pillow.mp4", clip_frames * 2)
    target = Image.open(shared / "images" / "opra_espresso_target.jpg").convert("RGB").resize((256, 256))
    prefix = "datasets/opra/"
    for i, e in enumerate(entries):
        img = root / e["image_path"][len(prefix) :]
        if not img.exists():
            img.parent.mkdir(parents=True, exist_ok=True)
            target.rotate(90 * (i % 4)).save(img, quality=90)
        clip = root / e["video_path"][len(prefix) :]
        if not clip.exists():
            write_clip(clip, frames[i % 2 : i % 2 + clip_frames])
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (root / "annotations" / f"{split}.json").write_text(json.dumps(entries))
    return root
