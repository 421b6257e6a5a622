"""A frozen reference, not our own model: what the authors' ViTDet Afformer (showlab/afformer +
detectron2's ViT) gave for seeded weights at a reduced ViT size (tests/data/afformer_vitdet_reference/
NOTE.md). Any change of our ViT, decoder, heads or loss that keeps the shapes but changes the numbers
fails here, in both attention modes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maskahand.afformer.checkpoint import load_reference_checkpoint
from maskahand.afformer.loss import action_probabilities
from maskahand.afformer.model import build_model
from maskahand.core.config import AfformerConfig
from tests.tool_util import load_tool

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "afformer_vitdet_reference" / "reference.pt"
TOLERANCE = 1e-5  # max |ours - theirs| / max |theirs|, fp32 on the CPU


def generator_module():
    return load_tool("make_vitdet_reference")


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float((ours.double() - theirs.double()).abs().max() / theirs.double().abs().max())


def our_config(c: dict) -> AfformerConfig:
    side = c["image_size"] // 16
    return AfformerConfig(
        encoder="vitdet_b",
        hidden=c["dim"],
        heads=c["dim"] // 64,  # the authors' SimpleDecoder: num_heads = hidden // 64
        vit_dim=c["dim"],
        vit_depth=c["depth"],
        vit_heads=c["heads"],
        vit_window=c["window"],
        vit_global_blocks=list(c["global_blocks"]),
        vit_img_size=c["img_size"],
        vit_pretrain_size=c["pretrain_size"],
        vit_trainable_blocks=c["trainable"],
        vit_drop_path=0.0,
        image_size=c["image_size"],
        max_q_thw=[1, side, side],
        max_kv_thw=[max(c["frames"]), -(-side // 2), -(-side // 2)],
        num_heatmaps=c["num_classes"],
        num_actions=c["num_classes"],
    )


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(DATA, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model(reference):
    gen = generator_module()
    state = {}
    for name, shape in reference["shapes"].items():
        state[name] = gen.seed_tensor(name, shape)
        assert float(state[name].double().sum()) == pytest.approx(
            reference["sums"][name], rel=1e-9, abs=1e-6
        ), f"{name}: the seed rule no longer gives the values the reference was made with"
    model = build_model(our_config(reference["config"])).eval()
    report = load_reference_checkpoint(model, state)  # the authors' names, through our loader
    assert report.ok and len(report.loaded) == len(reference["shapes"])
    return model


def padded(reference):
    inputs = reference["inputs"]
    lengths = list(inputs["num_frames"])
    video = torch.zeros(len(lengths), max(lengths), *inputs["frames"].shape[1:], dtype=torch.uint8)
    for b, clip in enumerate(inputs["frames"].split(lengths)):
        video[b, : len(clip)] = clip
    return video, inputs["images"], lengths


@pytest.fixture(scope="module", params=["efficient", "reference"])
def ours(request, model, reference) -> dict:
    video, images, lengths = padded(reference)
    model.set_attention_mode(request.param)
    counts = torch.tensor(lengths)
    with torch.no_grad():
        image_feats, video_feats = model.encode(video, images, counts)
        valid = torch.arange(video.shape[1])[None, :] < counts[:, None]
        result = {
            "image_features": image_feats,
            "frame_features": video_feats.transpose(1, 2)[valid],  # the valid frames, in batch order
            "decoder_output": model.decoder(image_feats, video_feats, counts),
            "out": model(video, images, num_frames=lengths),
        }
    model.set_attention_mode("efficient")
    return result


def test_encoder_features_equal_the_authors(ours, reference):
    want = reference["outputs"]
    assert relative_error(ours["image_features"], want["image_features"]) < TOLERANCE
    assert relative_error(ours["frame_features"], want["frame_features"]) < TOLERANCE


def test_decoder_and_heads_equal_the_authors(ours, reference):
    want = reference["outputs"]
    assert relative_error(ours["decoder_output"], want["decoder_output"]) < TOLERANCE
    assert relative_error(ours["out"].heatmap_logits, want["heatmap_logits"]) < TOLERANCE
    assert relative_error(ours["out"].action_logits, want["action_logits"]) < TOLERANCE
    heat = ours["out"].heatmap_logits.flatten(2).softmax(-1)  # as predict() and the authors' eval forward
    assert relative_error(heat, want["heatmap_probabilities"]) < TOLERANCE
    assert (
        relative_error(action_probabilities(ours["out"].action_logits), want["action_probabilities"])
        < TOLERANCE
    )


def test_loss_equals_the_authors_loss(model, ours, reference):
    inputs, want = reference["inputs"], reference["outputs"]
    n, side = len(inputs["num_frames"]), inputs["heatmaps_u8"][0].shape[-1]
    heatmaps, hot = torch.zeros(n, 7, side, side), torch.zeros(n, 7)
    for b, (acts, maps) in enumerate(zip(inputs["actions"], inputs["heatmaps_u8"])):
        heatmaps[b, acts] = maps.float() / 255.0
        hot[b, acts] = 1.0
    terms = model.loss(ours["out"], heatmaps, hot)
    assert terms.heatmap.item() == pytest.approx(float(want["loss_heatmap"]), rel=TOLERANCE)
    assert terms.action.item() == pytest.approx(float(want["loss_action"]), rel=TOLERANCE)
    assert terms.total.item() == pytest.approx(float(want["loss"]), rel=TOLERANCE)


def test_short_clip_alone_equals_its_row(model, reference):
    """The unpadded path: the 5-frame sample alone gives the authors' second row."""
    video, images, lengths = padded(reference)
    with torch.no_grad():
        out = model(video[1:, : lengths[1]], images[1:])
    assert relative_error(out.heatmap_logits, reference["outputs"]["heatmap_logits"][1:]) < TOLERANCE
    assert relative_error(out.action_logits, reference["outputs"]["action_logits"][1:]) < TOLERANCE
