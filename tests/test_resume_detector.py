"""Detector training resumes exactly: N steps in one go == N/2 steps, stop, ``--resume``, N/2 more.

``maskahand detector train`` on CPU with fixed seeds on a tiny 100DOH-format set (3 synthetic 64-pixel
images with hand boxes, written in the VOC layout the real release uses), with every source of
randomness of real training switched on: shuffled batches, horizontal flips, multi-scale sizes and
sampled anchors/RoIs (more candidates than the samplers take). The resumed run must end with the same
weights and optimizer state, and log the same losses and learning rates, as the uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from maskahand.cli import main as cli_main

SIDE = 64
EPOCHS = 2  # 2 iterations each (batches of 2 and 1 of 3 images): N = 4 steps, stopped after 2


def build_voc(root: Path, images: int = 3, side: int = SIDE) -> Path:
    """A 100DOH-layout VOC tree of ``images`` synthetic pictures, one or two hands each."""
    from PIL import Image

    from maskahand.detector.voc import HandAnnotation, ImageAnnotation, write_voc_xml

    rng = np.random.default_rng(7)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    ids = []
    for i in range(images):
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8) // 2
        hands = []
        for h in range(1 + i % 2):
            w, ht = int(rng.integers(14, 24)), int(rng.integers(14, 24))
            x, y = int(rng.integers(0, side - w)), int(rng.integers(0, side - ht))
            pixels[y : y + ht, x : x + w] = (220, 170, 140)  # a skin-coloured patch
            hands.append(
                HandAnnotation((float(x), float(y), float(x + w), float(y + ht)), 3 * (h % 2), h % 2)
            )
        stem = f"img{i:02d}"
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{stem}.jpg", quality=95)
        write_voc_xml(
            root / "Annotations" / f"{stem}.xml", ImageAnnotation(stem, f"{stem}.jpg", side, side, hands)
        )
        ids.append(stem)
    for split in ("train", "val"):
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


TRAIN_ARGS = [
    "detector.device=cpu",
    "train.batch_size=2",
    "train.workers=0",
    "train.lr=0.01",
    "train.warmup_iters=1",
    "train.lr_steps=[2]",  # the rate drops at the end of the resumed epoch: the scheduler must resume too
    "train.eval_every=0",
    "train.save_every=0",
    "train.hflip=0.5",
    "train.multiscale_min_sizes=[48,56]",
    "train.box_batch_size_per_image=16",
    "train.rpn_post_nms_top_n_train=64",
    "detector.hircnn.min_size=64",
    "detector.hircnn.max_size=64",
    "detector.hircnn.rpn_post_nms_top_n_test=20",
]


def train(data: Path, out: Path, epochs: int, *extra: str) -> None:
    argv = ["detector", "train", "--data", str(data), "--out", str(out), *extra, *TRAIN_ARGS]
    assert cli_main([*argv, f"train.epochs={epochs}"]) == 0


def tensors(obj, prefix: str = "") -> dict[str, object]:
    """Every tensor and number of a checkpoint, by path (the run's config and timings excluded)."""
    out: dict[str, object] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k not in ("config", "seconds", "time"):
                out.update(tensors(v, f"{prefix}{k}/"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(tensors(v, f"{prefix}{i}/"))
    elif isinstance(obj, (torch.Tensor, int, float, bool)) or obj is None:
        out[prefix.rstrip("/")] = obj
    return out


def log_of(out: Path) -> list[dict]:
    keep = ("epoch", "losses", "loss_mean", "lr")
    return [{k: r[k] for k in keep} for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())]


@pytest.mark.slow
def test_resumed_training_equals_uninterrupted_training(tmp_path, torch_one_thread):
    data = build_voc(tmp_path / "VOC2007")
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    train(data, whole, EPOCHS)
    train(data, halves, EPOCHS // 2)
    half_state = torch.load(halves / "checkpoint.pth", map_location="cpu", weights_only=True)
    train(data, halves, EPOCHS, "--resume", str(halves / "checkpoint.pth"))

    expected, got = log_of(whole), log_of(halves)
    assert [r["epoch"] for r in got] == list(range(EPOCHS))
    assert got == expected  # every iteration's loss, bit for bit, and the learning rates
    assert expected[-1]["lr"] < expected[0]["lr"]  # the schedule did change the rate

    a = tensors(torch.load(whole / "checkpoint.pth", map_location="cpu", weights_only=True))
    b = tensors(torch.load(halves / "checkpoint.pth", map_location="cpu", weights_only=True))
    assert a.keys() == b.keys()
    assert any("momentum_buffer" in k for k in a)  # the optimizer state is part of what is compared
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key
    # and the second half did train: the weights moved after the resume
    first_half = tensors(half_state)
    moved = [k for k in a if k.startswith("model/") and isinstance(a[k], torch.Tensor)]
    assert any(not torch.equal(a[k], first_half[k]) for k in moved if a[k].is_floating_point())
