"""Parity with the authors' ResNet-50-FPN Afformer: names, shapes, parameter count, checkpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from maskahand.afformer.checkpoint import (
    from_reference_name,
    load_reference_checkpoint,
    to_reference_name,
    to_reference_state_dict,
)
from maskahand.afformer.model import build_model
from maskahand.core.config import AfformerConfig
from maskahand.runtime.weights import WeightsFileError, WeightsMismatchError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKAHAND_SHARED_DATA", ROOT.parent / "shared" / "data")).parent
REFERENCE = SHARED / "reference" / "afformer_r50fpn_state_dict_shapes.json"
OPRA = AfformerConfig(num_heatmaps=7, num_actions=7)


@pytest.fixture(scope="module")
def reference_shapes() -> dict:
    if not REFERENCE.is_file():
        pytest.skip(f"reference shapes not found at {REFERENCE}")
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def opra_model():
    torch.manual_seed(0)
    return build_model(OPRA).eval()


def test_every_reference_tensor_maps_to_one_of_ours(reference_shapes, opra_model):
    ours = to_reference_state_dict(opra_model)
    theirs = reference_shapes["state_dict"]
    assert len(theirs) == 349
    assert sorted(ours) == sorted(theirs)  # nothing left out on either side, one-to-one
    for name, shape in theirs.items():
        assert list(ours[name].shape) == shape, name
    for name in opra_model.state_dict():
        assert from_reference_name(to_reference_name(name)) == name
    assert sum(p.numel() for p in opra_model.parameters()) == reference_shapes["num_parameters"] == 27_861_390


def test_lightning_checkpoint_round_trips(opra_model, tmp_path):
    state = {"network." + k: v.clone() for k, v in to_reference_state_dict(opra_model).items()}
    path = tmp_path / "afformer.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    torch.manual_seed(1)
    fresh = build_model(OPRA).eval()
    video, image = torch.rand(1, 2, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = fresh(video, image).heatmap_logits
    report = load_reference_checkpoint(fresh, path)
    assert report.ok and len(report.loaded) == 349
    with torch.no_grad():
        want, got = opra_model(video, image), fresh(video, image)
    assert not torch.equal(before, want.heatmap_logits)
    assert torch.equal(got.heatmap_logits, want.heatmap_logits)
    assert torch.equal(got.action_logits, want.action_logits)


def test_shorter_time_table_fills_the_first_rows(opra_model):
    """A 32-frame checkpoint (63 time rows) in a 64-frame model (127 rows): frame k of a T-frame clip uses
    row T-1-k, so the loaded rows are the first ones and short clips give the same result."""
    torch.manual_seed(3)
    longer = build_model(AfformerConfig(num_heatmaps=7, num_actions=7, max_kv_thw=[64, 32, 32])).eval()
    before = longer.decoder.block.cross_attn.rel_pos_t.detach().clone()
    report = load_reference_checkpoint(longer, to_reference_state_dict(opra_model))
    assert report.ok
    assert report.adapted == ["decoder.self2d_cross3d_block.cross_attn.rel_pos_t: 63 -> 127 rows"]
    table = longer.decoder.block.cross_attn.rel_pos_t.detach()
    assert torch.equal(table[:63], opra_model.decoder.block.cross_attn.rel_pos_t.detach())
    assert torch.equal(table[63:], before[63:])
    video, image = torch.rand(1, 6, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want, got = opra_model(video, image), longer(video, image)
    torch.testing.assert_close(got.heatmap_logits, want.heatmap_logits, rtol=1e-6, atol=1e-6)


def test_mismatches_are_reported(opra_model, tmp_path):
    state = to_reference_state_dict(opra_model)
    del state["decoder.self2d_cross3d_block.cross_attn.rel_pos_t"]
    state["decoder.extra_thing.weight"] = torch.zeros(3)
    pretrain = build_model(AfformerConfig(num_heatmaps=1, num_actions=0))
    with pytest.raises(WeightsMismatchError) as err:
        load_reference_checkpoint(pretrain, state)
    text = str(err.value)
    assert "decoder.self2d_cross3d_block.cross_attn.rel_pos_t" in text
    assert "decoder.extra_thing.weight" in text
    assert "predictor.actioner.5.weight" in text  # no action head in the pretraining model
    assert "predictor.upsampler.3.weight: checkpoint (128, 7, 2, 2) vs model (128, 1, 2, 2)" in text
    report = load_reference_checkpoint(pretrain, state, strict=False)
    assert report.missing == ["decoder.self2d_cross3d_block.cross_attn.rel_pos_t"]
    assert len(report.shape_mismatch) == 2  # upsampler.3 weight and bias
    block = "decoder.block.self_attn.qkv.weight"
    assert torch.equal(pretrain.state_dict()[block], opra_model.state_dict()[block])
    bad = tmp_path / "bad.ckpt"
    bad.write_text("not a checkpoint")
    with pytest.raises(WeightsFileError, match="bad.ckpt"):
        load_reference_checkpoint(pretrain, bad)


def test_coco_detection_weights_load_into_the_encoder(tmp_path):
    from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

    torch.manual_seed(2)
    detector = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91)
    path = tmp_path / "coco.pth"
    torch.save({"model": detector.state_dict()}, path)
    model = build_model(AfformerConfig(backbone_weights=str(path)))
    det = detector.state_dict()
    ours = model.encoder.state_dict()
    for name in (
        "body.layer3.2.conv2.weight",
        "body.layer4.0.bn1.running_var",
        "fpn.inner_blocks.3.0.weight",
        "fpn.layer_blocks.0.1.weight",
    ):
        assert torch.equal(ours[name], det["backbone." + name]), name
    assert model.encoder.body.conv1.weight.requires_grad  # default 5: the whole ResNet trains
    partly = build_model(AfformerConfig(backbone_weights=str(path), trainable_backbone_layers=3))
    assert not partly.encoder.body.conv1.weight.requires_grad  # 3: conv1 and layer1 frozen
    assert not partly.encoder.body.layer1[0].conv1.weight.requires_grad
    assert partly.encoder.body.layer2[0].conv1.weight.requires_grad
    (tmp_path / "heads_only.pth").write_bytes(b"")
    with pytest.raises(WeightsFileError, match="heads_only.pth"):
        build_model(AfformerConfig(backbone_weights=str(tmp_path / "heads_only.pth")))
    with pytest.raises(WeightsFileError, match="does not exist"):
        build_model(AfformerConfig(backbone_weights=str(tmp_path / "missing.pth")))
