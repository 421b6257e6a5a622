"""A frozen reference, not our own model: the authors' code's outputs for a fixed authors'-layout state
dict (tests/data/afformer_frozen_reference/NOTE.md says how they were produced; tools/make_afformer_reference.py
regenerates them from a checkout of the authors' code). Any change of our
forward pass, heads or loss that keeps the shapes but changes the numbers fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maskahand.afformer.checkpoint import load_reference_checkpoint
from maskahand.afformer.model import build_model
from maskahand.core.config import AfformerConfig
from tests.tool_util import load_tool

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "afformer_frozen_reference" / "reference.pt"
TOLERANCE = 1e-5  # max |ours - theirs| / max |theirs|, fp32 on the CPU


def generator_module():
    """tools/make_afformer_reference.py, which made the file: its seed rule regenerates what it does not store."""
    return load_tool("make_afformer_reference")


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape
    return float((ours.double() - theirs.double()).abs().max() / theirs.double().abs().max())


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(DATA, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model(reference):
    seed_tensor = generator_module().seed_tensor
    state = {name: value.float() for name, value in reference["state_dict"].items()}
    for name, shape in reference["generated"].items():
        state[name] = seed_tensor(name, shape)
        want = reference["generated_sums"][name]
        assert float(state[name].double().sum()) == pytest.approx(want, rel=1e-9, abs=1e-6), (
            f"{name}: the seed rule no longer gives the values the reference was made with"
        )
    model = build_model(AfformerConfig(num_heatmaps=7, num_actions=7)).eval()
    report = load_reference_checkpoint(model, state)  # the authors' names, through our loader
    assert report.ok and len(report.loaded) == 349
    return model


def _padded_inputs(reference) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    inputs = reference["inputs"]
    lengths = list(inputs["num_frames"])
    clips = inputs["frames"].split(lengths)
    video = torch.zeros(len(lengths), max(lengths), *clips[0].shape[1:], dtype=torch.uint8)
    for b, clip in enumerate(clips):
        video[b, : len(clip)] = clip
    return video, inputs["images"], lengths


@pytest.fixture(scope="module")
def ours(model, reference) -> dict:
    """Our outputs and predictions for the stored input, per attention mode."""
    video, images, lengths = _padded_inputs(reference)
    results = {}
    for mode in ("efficient", "reference"):
        model.set_attention_mode(mode)
        with torch.no_grad():
            results[mode] = (model(video, images, num_frames=lengths), model.predict(video, images, lengths))
    model.set_attention_mode("efficient")
    return results


@pytest.mark.parametrize("mode", ["efficient", "reference"])
def test_outputs_equal_the_authors_code(ours, reference, mode):
    out, pred = ours[mode]
    want = reference["outputs"]
    assert relative_error(out.heatmap_logits, want["heatmap_logits"]) < TOLERANCE
    assert relative_error(out.action_logits, want["action_logits"]) < TOLERANCE
    assert relative_error(pred.actions, want["action_probabilities"]) < TOLERANCE
    heat = want["heatmap_logits"].flatten(2).softmax(-1).view_as(pred.heatmaps)
    assert relative_error(pred.heatmaps, heat) < TOLERANCE


def test_loss_equals_the_authors_loss(model, ours, reference):
    images, lengths = reference["inputs"]["images"], reference["inputs"]["num_frames"]
    targets = reference["targets"]
    heatmaps = torch.zeros(len(lengths), 7, *images.shape[-2:])
    hot = torch.zeros(len(lengths), 7)
    for b, (acts, maps) in enumerate(zip(targets["actions"], targets["heatmaps_u8"])):
        heatmaps[b, acts] = maps.float() / 255.0
        hot[b, acts] = 1.0
    terms = model.loss(ours["efficient"][0], heatmaps, hot)
    want = reference["outputs"]
    assert terms.heatmap.item() == pytest.approx(want["loss_heatmap"], rel=TOLERANCE)
    assert terms.action.item() == pytest.approx(want["loss_action"], rel=TOLERANCE)
    assert terms.total.item() == pytest.approx(want["loss"], rel=TOLERANCE)


def test_short_clip_alone_equals_its_row(model, reference):
    """The unpadded path: the 5-frame sample run alone gives the authors' second row."""
    video, images, lengths = _padded_inputs(reference)
    with torch.no_grad():
        out = model(video[1:, : lengths[1]], images[1:])
    assert relative_error(out.heatmap_logits, reference["outputs"]["heatmap_logits"][1:]) < TOLERANCE
    assert relative_error(out.action_logits, reference["outputs"]["action_logits"][1:]) < TOLERANCE
