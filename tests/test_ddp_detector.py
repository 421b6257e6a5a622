"""Distributed detector training averages correctly: a 2-process gloo step == the mean of the two ranks' steps.

``torchrun --nproc-per-node 2 maskahand detector train`` on two images (one per rank) takes one SGD step.
DDP must average the two ranks' gradients, so the weights after that step must equal the mean of the weights
two single-process runs reach from the same start on each image alone, and the logged loss must be the mean
of theirs. (With one image per rank this is exactly "one process on the concatenated batch" for every part
of the model that treats images independently; the detector's BatchNorm layers normalise per rank, as DDP
without SyncBatchNorm does, which torch supports on CUDA only, so the per-image runs are the reference.)

Determinism: the ranks' random draws differ from a single process's, so nothing may depend on them: no
flips, one input size, 16 proposals (the RoI head's 512-box sampler takes them all), and the RPN's anchor
sampler is widened to take every anchor (a launcher sets ``rpn.fg_bg_sampler.batch_size_per_image`` on
the real model and runs the real ``maskahand`` command, in both the torchrun and the single processes).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import maskahand.detector.train as detector_train
from maskahand.cli import main as cli_main

SIDE = 64


def every_anchor(build):
    def build_sampling_every_anchor(*args, **kwargs):
        model = build(*args, **kwargs)
        model.rpn.fg_bg_sampler.batch_size_per_image = 10**6  # no random subset of the anchors
        return model

    return build_sampling_every_anchor


LAUNCHER = f"""
import sys

import maskahand.detector.train as train
from maskahand.cli import main

{inspect.getsource(every_anchor)}
train.build_hircnn_model = every_anchor(train.build_hircnn_model)
sys.exit(main(sys.argv[1:]))
"""
ARGS = [
    "detector.device=cpu",
    "train.epochs=1",
    "train.batch_size=1",
    "train.workers=0",
    "train.lr=0.05",
    "train.warmup_iters=0",
    "train.eval_every=0",
    "train.save_every=0",
    "train.hflip=0",
    "train.rpn_post_nms_top_n_train=16",
    "detector.hircnn.min_size=64",
    "detector.hircnn.max_size=64",
]


def build_voc(root: Path) -> Path:
    """Two 64-pixel images, one hand each; splits ``a`` and ``b`` (one image) and ``ab`` (both)."""
    from PIL import Image

    from maskahand.detector.voc import HandAnnotation, ImageAnnotation, write_voc_xml

    rng = np.random.default_rng(3)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    boxes = {"a": (6.0, 8.0, 40.0, 37.0), "b": (30.0, 22.0, 58.0, 60.0)}
    for stem, box in boxes.items():
        pixels = rng.integers(0, 120, (SIDE, SIDE, 3), dtype=np.uint8)
        x1, y1, x2, y2 = (int(v) for v in box)
        pixels[y1:y2, x1:x2] = (220, 170, 140)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{stem}.jpg", quality=95)
        hand = HandAnnotation(box, 3 if stem == "a" else 0, 1)
        write_voc_xml(
            root / "Annotations" / f"{stem}.xml", ImageAnnotation(stem, f"{stem}.jpg", SIDE, SIDE, [hand])
        )
        (root / "ImageSets" / "Main" / f"{stem}.txt").write_text(stem + "\n")
    (root / "ImageSets" / "Main" / "ab.txt").write_text("a\nb\n")
    return root


def parameters(out: Path) -> dict[str, torch.Tensor]:
    state = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)["model"]
    # BatchNorm statistics are per rank (rank 0's are saved): only the learned parameters are compared
    return {
        k: v.double()
        for k, v in state.items()
        if v.is_floating_point() and not k.endswith(("running_mean", "running_var"))
    }


def logged(out: Path) -> dict:
    lines = (out / "log.jsonl").read_text().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


@pytest.mark.slow
def test_two_rank_step_equals_the_mean_of_the_single_image_steps(tmp_path, monkeypatch, torch_one_thread):
    data = build_voc(tmp_path / "VOC2007")
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def argv(out: Path, split: str) -> list[str]:
        return [
            "detector",
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            *ARGS,
            f"train.train_split={split}",
        ]

    single = {}
    with monkeypatch.context() as patch:  # the same launcher's patch, in this process
        patch.setattr(detector_train, "build_hircnn_model", every_anchor(detector_train.build_hircnn_model))
        for split in ("a", "b"):
            assert cli_main(argv(tmp_path / split, split)) == 0
            single[split] = (parameters(tmp_path / split), logged(tmp_path / split))
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(launcher)]
    proc = subprocess.run([*cmd, *argv(ddp, "ab")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    (pa, la), (pb, lb) = single["a"], single["b"]
    record = logged(ddp)
    assert len(record["losses"]) == 1  # one step on each rank
    assert record["loss_mean"] == pytest.approx((la["loss_mean"] + lb["loss_mean"]) / 2, rel=1e-5)
    assert abs(la["loss_mean"] - lb["loss_mean"]) > 1e-3  # the two images do give different losses
    assert record["losses"][0] in (
        pytest.approx(la["losses"][0], rel=1e-5),
        pytest.approx(lb["losses"][0], rel=1e-5),
    )

    got = parameters(ddp)
    assert got.keys() == pa.keys() == pb.keys()
    error = max((got[k] - (pa[k] + pb[k]) / 2).abs().max().item() for k in got)
    spread = max((pa[k] - pb[k]).abs().max().item() for k in got) / 2  # how far one rank's step is off
    assert spread > 1e-4, spread
    assert error < 1e-3 * spread, (error, spread)
