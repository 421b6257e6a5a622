"""``maskahand detector run`` on a real image and a real video, and the command's config handling."""

from __future__ import annotations

import json
import sys

import pytest

from maskahand.cli import main as cli_main


def test_detector_cli_import_is_light():
    import subprocess

    code = "import sys, maskahand.detector.cli; print(sorted(m for m in ('torch', 'mediapipe', 'av') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_run_on_an_image_draws_the_hands(shared_data, tmp_path, capsys):
    from torchvision.io import decode_image

    src = shared_data / "images" / "hands23" / "ND_nQLywBlIF7I_frame005401.jpg"
    out = tmp_path / "drawn.png"
    assert (
        cli_main(["detector", "run", str(src), "--out", str(out), "detector.mediapipe.box_padding=0.3"]) == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["detector"]["name"] == "mediapipe" and len(summary["hands"]) == 1
    drawn, original = decode_image(str(out)), decode_image(str(src))
    assert drawn.shape == original.shape
    x1, y1, x2, y2 = (round(v) for v in summary["hands"][0]["box"])
    changed = (drawn != original).any(0)
    assert changed[y1 : y2 + 1, x1 : x2 + 1].any()  # the box outline and label were drawn ...
    assert not changed[:, : max(0, x1 - 5)].any()  # ... and nothing left of the box
    config = (tmp_path / "drawn.config.yaml").read_text()
    assert "box_padding: 0.3" in config


def test_run_on_a_video_writes_an_mp4_with_the_sampled_frames(shared_data, tmp_path, capsys):
    import av

    out = tmp_path / "hands.mp4"
    src = shared_data / "videos" / "ego4d_stirring.mp4"
    assert cli_main(["detector", "run", str(src), "--out", str(out), "video.fps=5"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with av.open(str(out)) as container:
        decoded = [f for f in container.decode(video=0)]
    # 60 frames at 30 fps = 2 s, sampled at 5 fps -> 10 frames
    assert summary["frames"] == len(decoded) == 10
    assert (decoded[0].width, decoded[0].height) == (384, 288)


def test_run_errors_are_clear(tmp_path, capsys):
    assert cli_main(["detector", "run", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o.png")]) == 2
    assert "missing.jpg does not exist" in capsys.readouterr().err
    img = tmp_path / "x.jpg"
    img.write_bytes(b"not a jpeg")
    rc = cli_main(["detector", "run", str(img), "--out", str(tmp_path / "o.png"), "--backend", "hircnn"])
    assert rc == 2
    assert "detector.hircnn.weights" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "train", "eval"])
def test_subcommands_have_help(command, capsys):
    assert cli_main(["detector", command, "--help"]) == 0
    assert "--config" in capsys.readouterr().out
