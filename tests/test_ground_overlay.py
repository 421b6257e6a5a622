"""``maskahand ground --out *.webm|.mp4|.gif``: the authors' demo windowing, one map per window on screen,
and the encoded overlay read back with PyAV (size, frame count, panes that change with the window)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from maskahand.cli import main
from maskahand.core.cli_util import EXIT_USAGE
from maskahand.evaluation.overlay import demo_windows, window_at
from tests.test_eval_e2e import save_checkpoint

pytestmark = pytest.mark.usefixtures("torch_one_thread")
# 2 fps sampling of the 2.1 s espresso clip gives 5 frames (0, 0.5, ..., 2 s): windows [0, 4) and [4, 5)
TINY = ["eval.image_size=64", "eval.clip_length=4", "eval.clip_stride=4", "eval.device=cpu", "eval.overlay_fps=10",
        "eval.overlay_height=96"]  # fmt: skip


def test_demo_windows_start_every_stride_while_inside_the_video():
    # demo.py: clip = video[i*interval : i*interval + max_num_frames] while i*interval < len(video)
    assert demo_windows(5, 4, 4) == [(0, 4), (4, 5)]
    assert demo_windows(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10), (8, 10)]
    assert demo_windows(3, 32, 16) == [(0, 3)]
    assert demo_windows(0, 4, 4) == []
    # the frame shown is in the latest window started at or before it, the last one past the end
    assert [window_at(k, 4, 2) for k in range(7)] == [0, 0, 0, 0, 1, 1, 1]
    assert [window_at(k, 2, 5) for k in range(5)] == [0, 0, 1, 1, 2]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "ft.pt", heatmaps=7, actions=7)


def decode(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.parametrize("suffix", [".webm", ".mp4", ".gif"])
def test_overlay_video_shows_each_window_its_own_map(shared_data, finetuned, tmp_path, suffix):
    from PIL import Image

    video = shared_data / "videos" / "opra_espresso_vp9.mp4"
    image = shared_data / "images" / "opra_espresso_target.jpg"
    out = tmp_path / f"overlay{suffix}"
    argv = ["ground", str(video), str(image), "--checkpoint", str(finetuned), "--out", str(out), *TINY]
    assert main(argv) == 0
    frames = decode(out)
    # 2.1 s at 10 fps; panes: video 96 high at its aspect, image 96 high at its aspect, colour bar, text above
    with Image.open(image) as im:
        image_width = round(96 * im.width / im.height)
    video_width = round(96 * 640 / 360)
    assert len(frames) == 21
    height, width = frames[0].shape[:2]
    assert width == video_width + image_width + 14 + 52 + (video_width + image_width) % 2
    assert np.abs(frames[5].astype(float) - frames[15]).mean() > 1  # the video moves


def test_each_frame_shows_the_map_of_its_window(shared_data, tmp_path):
    import torch

    from maskahand.core.config import EvalConfig, VideoConfig
    from maskahand.evaluation.ground import full_image
    from maskahand.evaluation.overlay import WindowMaps, write_overlay_video

    video = shared_data / "videos" / "opra_espresso_vp9.mp4"
    image = full_image(shared_data / "images" / "opra_espresso_target.jpg")
    heat = torch.zeros(2, 8, 8)
    heat[0, :, :2] = 1e-3  # window 0: hot on the left edge
    heat[1, :, -2:] = 1e-3  # window 1: hot on the right edge
    maps = WindowMaps([(0, 4), (4, 5)], heat, [[("hold", 0.9)], [("push", 0.8)]])
    cfg = EvalConfig(clip_length=4, clip_stride=4, overlay_fps=10, overlay_height=96)
    out = tmp_path / "o.webm"
    assert write_overlay_video(video, image, maps, out, cfg, VideoConfig(), "t", progress=False) == 21
    frames = decode(out)
    height = frames[0].shape[0]
    video_width = round(96 * 640 / 360)
    image_width = round(96 * image.shape[2] / image.shape[1])
    rows = slice(height - 80, height - 16)

    def redness(frame: np.ndarray, left: bool) -> float:
        x = video_width + 2 if left else video_width + image_width - 10
        patch = frame[rows, x : x + 8].astype(float)
        return float((patch[..., 0] - patch[..., 2]).mean())

    # frames 0..19 (t < 2 s) show window 0, frame 20 (t = 2 s) window 1
    for i in (0, 10, 19):
        assert redness(frames[i], left=True) > redness(frames[i], left=False) + 40, i
    assert redness(frames[20], left=False) > redness(frames[20], left=True) + 40


def test_ground_refuses_an_unknown_output_format(tmp_path, capsys):
    argv = ["ground", "v.mp4", "i.jpg", "--checkpoint", "c.pt", "--out", str(tmp_path / "o.avi")]
    assert main(argv) == EXIT_USAGE
    assert (
        "o.avi: write a picture (.png, .jpg, .jpeg) or an overlay video (.mp4, .webm, .gif)"
        in capsys.readouterr().err
    )


def test_png_stays_one_summed_map_over_the_image(shared_data, finetuned, tmp_path, caplog):
    from PIL import Image

    video = shared_data / "videos" / "opra_espresso_vp9.mp4"
    image = shared_data / "images" / "opra_espresso_target.jpg"
    out = tmp_path / "ground.png"
    with caplog.at_level(logging.INFO, logger="maskahand.evaluation.ground"):
        assert (
            main(["ground", str(video), str(image), "--checkpoint", str(finetuned), "--out", str(out), *TINY])
            == 0
        )
    with Image.open(image) as src, Image.open(out) as drawn:
        assert drawn.width == src.width and drawn.height == src.height + max(
            16, src.height // 40
        )  # + title bar
    # the evaluation's clips (5 frames, length 4, stride 4: [0, 4) and the remainder [4, 5)), summed once
    assert (
        "ground: 2 clip(s)" in caplog.text
        and "[4, 1] frames" in caplog.text
        and "top actions: " in caplog.text
    )
