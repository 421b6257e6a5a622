"""The ``maskahand`` command: stages listed, --help everywhere, overrides parsed, errors reported."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from maskahand.cli.command import STAGES, build_parser, main

STAGE_NAMES = [name for name, _ in STAGES]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "maskahand.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_top_level_help_lists_every_stage():
    out = run_cli("--help")
    assert out.returncode == 0
    for name in ("detector", "mine", "synth", "shards", "pretrain", "finetune"):
        assert name in out.stdout


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_every_stage_has_help(stage, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([stage, "--help"] if stage != "config" else ["config", "--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from maskahand.cli import build_parser; build_parser(); "
        "heavy = [m for m in ('torch', 'ray', 'mediapipe', 'kornia') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_config_command_applies_overrides(capsys):
    assert main(["config", "mine", "mine.fps=10", "mine.clip_length=16"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["mine"]["fps"] == 10.0 and cfg["mine"]["clip_length"] == 16


def test_config_command_reports_unknown_key_and_exit_code(capsys):
    assert main(["config", "synth", "synth.nope=1"]) == 2
    assert "synth.nope" in capsys.readouterr().err


def test_unrecognised_flag_is_an_error():
    out = run_cli("config", "mine", "--frobnicate")
    assert out.returncode == 2 and "--frobnicate" in out.stderr


@pytest.mark.parametrize(("stage", "required"), [("pretrain", "--shards"), ("finetune", "--data")])
def test_training_stages_name_their_missing_arguments(stage, required, capsys):
    assert main([stage]) == 2
    assert required in capsys.readouterr().err
