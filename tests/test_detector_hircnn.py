"""hircnn backend: the authors' checkpoint layouts, the hand-state rule, clear weight errors.

Faster R-CNN is kept tiny (min side 128, 50 proposals) so a forward pass takes well under a second.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maskahand.core.config import DetectorConfig, HircnnConfig
from maskahand.detector import build_detector
from maskahand.detector.hircnn import apply_state_rule, build_hircnn_model, select_hands
from maskahand.runtime.weights import WeightsFileError

CONTACT, NO_CONTACT = 2, 1


def tiny_cfg(weights: str | None = None, **hircnn: object) -> DetectorConfig:
    cfg = DetectorConfig(backend="hircnn", device="cpu", batch_size=2)
    h = cfg.hircnn
    h.weights, h.min_size, h.max_size, h.rpn_post_nms_top_n_test = weights, 128, 160, 50
    for k, v in hircnn.items():
        setattr(h, k, v)
    return cfg


@pytest.fixture(scope="module")
def random_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_hircnn_model(tiny_cfg(score_threshold=0.0).hircnn).eval()


@pytest.fixture(scope="module")
def real_frames(shared_data: Path) -> list[torch.Tensor]:
    from torchvision.io import decode_image
    from torchvision.transforms.functional import resize

    names = ["CC_000000057750.jpg", "ND_nQLywBlIF7I_frame005401.jpg"]
    imgs = [decode_image(str(shared_data / "images" / "hands23" / n)) for n in names]
    return [resize(imgs[0], [120, 160], antialias=True), resize(imgs[1], [90, 160], antialias=True)]


@pytest.mark.parametrize("layout", ["authors", "plain"])
def test_checkpoint_layouts_load_and_reproduce_the_model(tmp_path, random_model, real_frames, layout):
    sd = random_model.state_dict()
    path = tmp_path / "hircnn_r50fpnv2_849.pth"
    torch.save({"model": sd} if layout == "authors" else sd, path)

    loaded = build_detector(tiny_cfg(str(path), score_threshold=0.0))
    reference = build_detector(tiny_cfg(allow_random_weights=True, score_threshold=0.0))
    reference.model = random_model  # the detector the checkpoint was written from

    with torch.inference_mode():
        images = [f.float() / 255 for f in real_frames]
        raw_loaded, raw_ref = loaded.model(images), random_model(images)
    for a, b in zip(raw_loaded, raw_ref):
        assert len(a["boxes"]) > 0
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(a[key], b[key])
    assert loaded.detect(real_frames) == reference.detect(real_frames)
    assert loaded.version.startswith("r50fpnv2-") and loaded.version != "r50fpnv2-random"


def test_torchvision_reference_training_checkpoint_loads(tmp_path, random_model):
    """The authors trained hircnn with torchvision's detection reference script (their outputs are
    ``model_11.pth``), whose checkpoints also hold ``args`` (an ``argparse.Namespace``), the optimizer,
    the lr scheduler and the epoch next to ``model``; torch's weights-only loader refuses Namespace."""
    import argparse

    sd = random_model.state_dict()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.02, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[8, 11])
    path = tmp_path / "model_11.pth"
    args = argparse.Namespace(model="fasterrcnn_resnet50_fpn_v2", lr=0.02, sync_bn=True, amp=True)
    ckpt = {"model": sd, "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict()}
    torch.save({**ckpt, "args": args, "epoch": 11}, path)
    loaded = build_detector(tiny_cfg(str(path), score_threshold=0.0))
    for key, value in sd.items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_detect_accepts_frames_of_different_sizes_and_boxes_stay_inside(real_frames):
    det = build_detector(tiny_cfg(allow_random_weights=True, score_threshold=0.0))
    result = det.detect(real_frames)
    assert len(result) == 2
    for frame, hands in zip(real_frames, result):
        assert len(hands) in (1, 2)  # max_detections
        h, w = frame.shape[-2:]
        for hand in hands:
            x1, y1, x2, y2 = hand.box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert hand.state in ("contact", "no_contact")


def test_random_weights_are_refused_unless_allowed():
    with pytest.raises(WeightsFileError, match=r"detector\.hircnn\.weights"):
        build_detector(tiny_cfg())


def test_missing_weights_file_names_option_and_layout(tmp_path):
    with pytest.raises(WeightsFileError) as err:
        build_detector(tiny_cfg(str(tmp_path / "nope.pth")))
    msg = str(err.value)
    assert "nope.pth" in msg and "does not exist" in msg
    assert "detector.hircnn.weights" in msg and "{'model': state_dict}" in msg


def test_wrong_architecture_state_dict_is_refused(tmp_path):
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    other = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=3)
    path = tmp_path / "mobilenet.pth"
    torch.save({"model": other.state_dict()}, path)
    with pytest.raises(WeightsFileError) as err:
        build_detector(tiny_cfg(str(path)))
    msg = str(err.value)
    assert "mobilenet.pth" in msg and "missing" in msg and "unexpected" in msg
    assert "fasterrcnn_resnet50_fpn_v2(num_classes=3)" in msg and "detector.hircnn.weights" in msg


def test_wrong_class_count_is_refused(tmp_path, random_model):
    sd = dict(random_model.state_dict())
    sd["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(91, 1024)  # a COCO head
    path = tmp_path / "coco_head.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsFileError, match=r"mis-shaped: roi_heads\.box_predictor\.cls_score\.weight"):
        build_detector(tiny_cfg(str(path)))


@pytest.mark.parametrize("content", [b"not a torch file", None])
def test_unreadable_or_tensorless_file_is_refused(tmp_path, content):
    path = tmp_path / "bad.pth"
    if content is None:
        torch.save({"model": {"epoch": 3}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsFileError, match="bad.pth"):
        build_detector(tiny_cfg(str(path)))


# --- the hand-state rule on constructed overlaps ------------------------------------------------
# IoU((0,0,10,10), (0,0,10,6)) = 60/100 = 0.6; IoU((0,0,10,10), (5,0,15,10)) = 50/150 = 0.33


def test_overlapping_opposite_states_keep_the_higher_score():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 6]]
    assert apply_state_rule(boxes, [0.8, 0.9], [CONTACT, NO_CONTACT], 0.5) == [1]
    assert apply_state_rule(boxes, [0.95, 0.9], [CONTACT, NO_CONTACT], 0.5) == [0]


def test_opposite_states_below_the_iou_are_both_kept():
    boxes = [[0, 0, 10, 10], [5, 0, 15, 10]]
    assert apply_state_rule(boxes, [0.8, 0.9], [CONTACT, NO_CONTACT], 0.5) == [1, 0]
    # the threshold is configurable: at 0.3 the same pair is one hand
    assert apply_state_rule(boxes, [0.8, 0.9], [CONTACT, NO_CONTACT], 0.3) == [1]


def test_same_state_overlaps_are_left_to_nms():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 6]]
    assert apply_state_rule(boxes, [0.8, 0.9], [CONTACT, CONTACT], 0.5) == [1, 0]


def test_a_suppressed_box_does_not_suppress_others():
    # A (contact .95) removes B (no-contact .9); C (contact .85) overlaps only B, so it stays
    boxes = [
        [0, 0, 10, 10],
        [0, 2, 10, 12],
        [0, 5, 10, 15],
    ]  # IoU(A,B)=80/120, IoU(B,C)=70/130, IoU(A,C)=50/150
    assert apply_state_rule(boxes, [0.95, 0.9, 0.85], [CONTACT, NO_CONTACT, CONTACT], 0.5) == [0, 2]


def test_select_hands_applies_threshold_rule_and_cap():
    cfg = HircnnConfig()  # paper: threshold 0.7, at most 2, IoU 0.5
    boxes = [[0, 0, 10, 10], [0, 0, 10, 6], [50, 50, 60, 60], [80, 80, 90, 90], [20, 20, 30, 30]]
    scores = [0.99, 0.98, 0.9, 0.8, 0.6]
    labels = [CONTACT, NO_CONTACT, NO_CONTACT, CONTACT, CONTACT]
    hands = select_hands(boxes, scores, labels, cfg)
    assert [(h.box, h.state, h.score) for h in hands] == [
        ((0.0, 0.0, 10.0, 10.0), "contact", 0.99),
        ((50.0, 50.0, 60.0, 60.0), "no_contact", 0.9),
    ]


def test_coco_initialisation_loads_all_but_the_box_predictor(tmp_path, random_model):
    from maskahand.detector.hircnn import load_coco_init
    from maskahand.detector.train import freeze_backbone_layers

    coco = dict(random_model.state_dict())  # torchvision's COCO file: same layout, a 91-class predictor
    coco["roi_heads.box_predictor.cls_score.weight"] = torch.randn(91, 1024)
    coco["roi_heads.box_predictor.cls_score.bias"] = torch.randn(91)
    coco["roi_heads.box_predictor.bbox_pred.weight"] = torch.randn(91 * 4, 1024)
    coco["roi_heads.box_predictor.bbox_pred.bias"] = torch.randn(91 * 4)
    path = tmp_path / "fasterrcnn_resnet50_fpn_v2_coco.pth"
    torch.save(coco, path)

    torch.manual_seed(1)
    model = build_hircnn_model(tiny_cfg().hircnn)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    skipped = load_coco_init(model, path)
    assert sorted(skipped) == sorted(k for k in before if k.startswith("roi_heads.box_predictor."))
    after = model.state_dict()
    for k, v in after.items():
        assert torch.equal(v, before[k] if k in skipped else coco[k]), k

    freeze_backbone_layers(model, 3)  # torchvision's default for a pretrained backbone
    trainable = {
        n.split(".")[2]
        for n, p in model.named_parameters()
        if n.startswith("backbone.body.") and p.requires_grad
    }
    assert trainable == {"layer2", "layer3", "layer4"}


def test_coco_file_of_another_architecture_is_refused(tmp_path):
    from maskahand.detector.hircnn import load_coco_init

    path = tmp_path / "coco.pth"
    torch.save({"backbone.body.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsFileError, match=r"coco\.pth: .*missing.*train\.coco_weights"):
        load_coco_init(build_hircnn_model(tiny_cfg().hircnn), path)
