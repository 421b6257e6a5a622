"""detector.backend=auto (the default): hircnn whenever its weights are configured, mediapipe otherwise.

The weights are a real Faster R-CNN state dict in the authors' layout (``{"model": state_dict}``) that
the test writes; the hircnn backend loads it with its real loader.
"""

from __future__ import annotations

import logging

import pytest
import torch

from maskahand.core.config import HIRCNN_WEIGHTS_ENV, DetectorConfig, DetectorRecipe, MineRecipe
from maskahand.core.configbase import load_config
from maskahand.detector import build_detector
from maskahand.detector.hircnn import build_hircnn_model

TINY = ["detector.hircnn.min_size=128", "detector.hircnn.max_size=160", "detector.device=cpu"]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> str:
    torch.manual_seed(0)
    cfg = DetectorConfig(backend="hircnn")
    cfg.hircnn.min_size, cfg.hircnn.max_size = 128, 160
    path = tmp_path_factory.mktemp("weights") / "hircnn_r50fpnv2_849.pth"
    torch.save({"model": build_hircnn_model(cfg.hircnn).state_dict()}, path)
    return str(path)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_without_weights_mediapipe_runs_with_one_warning_that_contact_is_not_judged(monkeypatch, caplog):
    import maskahand.core.config as C

    monkeypatch.delenv(HIRCNN_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(C, "_warned_contact_not_judged", False)  # once per process: as in a fresh one
    caplog.set_level(logging.WARNING)
    assert DetectorConfig().backend == "auto"
    recipe = load_config(MineRecipe, None, ["mine.fps=5"])
    assert recipe.detector.backend == "mediapipe" and recipe.detector.hircnn.weights is None
    (warning,) = [w for w in warnings_of(caplog) if "detector" in w]
    assert "contact is NOT judged" in warning and HIRCNN_WEIGHTS_ENV in warning
    # one line for the process: more configs (copies, Ray actors) neither change it nor warn again
    caplog.clear()
    assert load_config(MineRecipe).detector.backend == "mediapipe"
    detector = build_detector(recipe.detector)
    assert detector.name == "mediapipe" and recipe.detector.backend == "mediapipe"
    assert not [w for w in warnings_of(caplog) if "hircnn" in w]


def test_weights_in_the_config_select_hircnn(monkeypatch, weights_file, caplog):
    monkeypatch.delenv(HIRCNN_WEIGHTS_ENV, raising=False)
    caplog.set_level(logging.WARNING)
    recipe = load_config(DetectorRecipe, None, [f"detector.hircnn.weights={weights_file}", *TINY])
    assert recipe.detector.backend == "hircnn"
    assert not [w for w in warnings_of(caplog) if "NOT judged" in w]
    detector = build_detector(recipe.detector)
    assert detector.name == "hircnn" and detector.version != "r50fpnv2-random"


def test_weights_in_the_environment_select_hircnn_and_are_recorded(monkeypatch, weights_file):
    monkeypatch.setenv(HIRCNN_WEIGHTS_ENV, weights_file)
    recipe = load_config(MineRecipe, None, TINY)
    assert recipe.detector.backend == "hircnn" and recipe.detector.hircnn.weights == weights_file
    detector = build_detector(recipe.detector)
    saved = torch.load(weights_file)["model"]
    loaded = detector.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())  # the file's weights, not random ones


def test_an_explicit_backend_wins_over_configured_weights(monkeypatch, weights_file):
    monkeypatch.setenv(HIRCNN_WEIGHTS_ENV, weights_file)
    assert load_config(MineRecipe, None, ["detector.backend=mediapipe"]).detector.backend == "mediapipe"
    pre = load_config(MineRecipe, None, ["detector.backend=precomputed"]).detector
    assert pre.backend == "precomputed"
