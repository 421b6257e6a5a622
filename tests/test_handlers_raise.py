"""eval, finetune and hotspots handlers raise their errors; ``run_handler`` prints the one line and exits 2.

Each bad command is run twice: its handler called directly must raise ``UsageError`` (no handler prints
its own error), and ``maskahand.cli.main`` must turn that into exit status 2 and one stderr line naming
the stage (the house form ``maskahand STAGE: message``; hotspots printed ``maskahand hotspots train:``
itself before) and the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maskahand.cli import build_parser, main, split_overrides
from maskahand.core.cli_util import UsageError


def opra_annotations(path: Path) -> Path:
    entry = {"image_path": "datasets/opra/images/a.jpg", "video_path": "datasets/opra/clips/a.mp4",
             "width": 64, "height": 64, "actions": [1], "heatmaps": [[[10, 10], [20, 30]]]}  # fmt: skip
    path.write_text(json.dumps([entry]))
    return path


def check(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    rest, overrides = split_overrides(build_parser(), argv)
    args = build_parser().parse_args(rest)
    args.overrides = overrides
    with pytest.raises(UsageError) as e:
        args.func(args)
    assert str(e.value) == message
    assert capsys.readouterr().err == ""  # the handler itself printed nothing
    assert main(argv) == 2
    assert capsys.readouterr().err == f"maskahand {argv[0]}: {message}\n"  # `maskahand STAGE: message`


def test_eval_missing_annotations(tmp_path, capsys):
    missing = tmp_path / "none.json"
    argv = ["eval", "--annotations", str(missing), "--baseline", "uniform", "--out", str(tmp_path / "o")]
    check(argv, f"{missing}: annotation file not found", capsys)
    assert not (tmp_path / "o").exists()


def test_eval_checkpoint_without_media_root(tmp_path, capsys):
    ann = opra_annotations(tmp_path / "test.json")
    argv = [
        "eval",
        "--annotations",
        str(ann),
        "--checkpoint",
        str(tmp_path / "c.pt"),
        "--out",
        str(tmp_path / "o"),
    ]
    check(argv, "a checkpoint needs the images and clips: give --data ROOT", capsys)


def test_finetune_missing_split(tmp_path, capsys):
    argv = [
        "finetune",
        "--dataset",
        "opra",
        "--data",
        str(tmp_path),
        "--init",
        "none",
        "--out",
        str(tmp_path / "r"),
    ]
    check(argv, f"{tmp_path / 'annotations' / 'train.json'}: annotation file not found", capsys)
    assert not (tmp_path / "r").exists()


def test_hotspots_predict_missing_image(tmp_path, capsys):
    argv = [
        "hotspots",
        "predict",
        str(tmp_path / "a.jpg"),
        "--checkpoint",
        "c.pt",
        "--out",
        str(tmp_path / "o"),
    ]
    check(argv, f"image not found: {tmp_path / 'a.jpg'}", capsys)
    bad = tmp_path / "b.png"
    bad.write_bytes(b"not a png")
    argv[2] = str(bad)
    rest = build_parser().parse_args(argv)
    rest.overrides = []
    with pytest.raises(UsageError, match=f"{bad}: not a readable image"):
        rest.func(rest)


def test_hotspots_train_missing_annotations(tmp_path, capsys):
    argv = ["hotspots", "train", "--dataset", "opra", "--data", str(tmp_path), "--out", str(tmp_path / "r")]
    rest, _ = split_overrides(build_parser(), argv)
    args = build_parser().parse_args(rest)
    args.overrides = []
    with pytest.raises(UsageError) as e:
        args.func(args)
    assert "annotations" in str(e.value) and str(tmp_path) in str(e.value)
    check(argv, str(e.value), capsys)
