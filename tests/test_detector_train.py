"""100DOH VOC format, AP evaluation and the hircnn training loop on a tiny set built from hands23.

The set: the five hands23 images scaled to a 256-pixel long side, with the Hands23 reference boxes
as ground truth (contact_state "no_contact" -> contactstate 0, otherwise 3 "portable object").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from maskahand.cli import main as cli_main
from maskahand.core.config import DetectorTrainRecipe
from maskahand.detector.evaluate import ImageGroundTruth, ImagePrediction, average_precision, hand_metrics
from maskahand.detector.voc import (
    LABEL_CONTACT,
    LABEL_NO_CONTACT,
    HandAnnotation,
    ImageAnnotation,
    VOCFormatError,
    VOCHandDataset,
    parse_voc_xml,
    write_voc_xml,
)

SIDE = 256


def build_tiny_voc(shared_data: Path, root: Path) -> dict[str, list[tuple[tuple[float, ...], int]]]:
    from PIL import Image

    src = shared_data / "images" / "hands23"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    expected: dict[str, list[tuple[tuple[float, ...], int]]] = {}
    for im in json.loads((src / "result.json").read_text())["images"]:
        image = Image.open(src / im["file_name"])
        s = SIDE / max(image.size)
        image = image.resize((round(image.width * s), round(image.height * s)))
        stem = Path(im["file_name"]).stem
        image.save(root / "JPEGImages" / f"{stem}.jpg")
        hands = [
            HandAnnotation(
                tuple(round(float(v) * s, 2) for v in p["hand_bbox"]),
                0 if p["contact_state"] == "no_contact" else 3,
                1 if p["hand_side"] == "right_hand" else 0,
            )
            for p in im["predictions"]
        ]
        write_voc_xml(
            root / "Annotations" / f"{stem}.xml", ImageAnnotation(stem, f"{stem}.jpg", *image.size, hands)
        )
        expected[stem] = [(h.box, h.label) for h in hands]
    ids = "\n".join(expected) + "\n"
    for split in ("train", "val"):
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(ids)
    return expected


@pytest.fixture(scope="module")
def tiny_voc(shared_data, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("voc") / "VOC2007"
    return root, build_tiny_voc(shared_data, root)


def test_voc_parsing_reads_hands_and_ignores_target_objects(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text(
        "<annotation><filename>a.jpg</filename><size><width>640</width><height>480</height></size>"
        "<object><name>hand</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>110</xmax><ymax>220</ymax>"
        "</bndbox><contactstate>3</contactstate><handside>1</handside></object>"
        "<object><name>targetobject</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
        "</bndbox></object>"
        "<object><name>hand</name><bndbox><xmin>301</xmin><ymin>1</ymin><xmax>400</xmax><ymax>80</ymax>"
        "</bndbox><contactstate>0</contactstate><handside>0</handside></object></annotation>"
    )
    ann = parse_voc_xml(xml)
    assert (ann.width, ann.height, ann.filename) == (640, 480, "a.jpg")
    assert [(h.box, h.contact_state, h.hand_side, h.label) for h in ann.hands] == [
        ((10.0, 20.0, 110.0, 220.0), 3, 1, LABEL_CONTACT),  # VOC 1-based -> 0-based x1/y1
        ((300.0, 0.0, 400.0, 80.0), 0, 0, LABEL_NO_CONTACT),
    ]


def test_voc_errors_name_the_file(tmp_path):
    bad = tmp_path / "b.xml"
    bad.write_text(
        "<annotation><size><width>10</width><height>10</height></size><object><name>hand</name>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
        "<contactstate>7</contactstate></object></annotation>"
    )
    with pytest.raises(VOCFormatError, match=r"b\.xml: contactstate 7"):
        parse_voc_xml(bad)
    with pytest.raises(VOCFormatError, match=r"ImageSets/Main/test\.txt does not exist"):
        (tmp_path / "Annotations").mkdir()
        VOCHandDataset(tmp_path, "test")


def test_dataset_round_trip(tiny_voc):
    root, expected = tiny_voc
    ds = VOCHandDataset(root, "train")
    assert len(ds) == 5
    for i, stem in enumerate(ds.ids):
        image, target = ds[i]
        assert image.dtype == torch.float32 and image.shape[0] == 3 and max(image.shape[1:]) == SIDE
        boxes = [tuple(b) for b in target["boxes"].tolist()]
        assert boxes == [pytest.approx(b, abs=1e-3) for b, _ in expected[stem]]
        assert target["labels"].tolist() == [label for _, label in expected[stem]]


# --- AP ----------------------------------------------------------------------------------------


def gts_of(ds: VOCHandDataset) -> list[ImageGroundTruth]:
    return [
        ImageGroundTruth(t["boxes"], t["labels"], t["difficult"]) for t in (ds[i][1] for i in range(len(ds)))
    ]


def test_ap_is_one_for_ground_truth_and_lower_for_shifted_boxes(tiny_voc):
    gts = gts_of(VOCHandDataset(tiny_voc[0], "val"))
    perfect = [
        ImagePrediction(g.boxes.clone(), torch.linspace(1.0, 0.5, len(g.boxes)), g.labels.clone())
        for g in gts
    ]
    assert hand_metrics(gts, perfect) == {"ap_hand": 1.0, "ap_hand_state": 1.0}

    shifted = []
    for p in perfect:
        b = p.boxes.clone()
        b[:, [0, 2]] += (b[:, 2] - b[:, 0]).unsqueeze(1) * 0.6  # IoU 0.25 with its own hand
        shifted.append(ImagePrediction(b, p.scores, p.labels))
    m = hand_metrics(gts, shifted)
    assert m["ap_hand"] < 0.5 and m["ap_hand_state"] <= m["ap_hand"]

    flipped = [ImagePrediction(p.boxes, p.scores, 3 - p.labels) for p in perfect]  # every state wrong
    assert hand_metrics(gts, flipped) == {"ap_hand": 1.0, "ap_hand_state": 0.0}


def test_ap_all_point_interpolation_by_hand():
    # 2 hands; ranked detections: TP (0.9), FP (0.8), TP (0.7)
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    gt = ImageGroundTruth(torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), torch.tensor([1, 2]))
    pred = ImagePrediction(
        torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]]),
        torch.tensor([0.9, 0.8, 0.7]),
        torch.tensor([1, 1, 2]),
    )
    assert average_precision([gt], [pred]) == pytest.approx(5 / 6)
    # a duplicate of an already matched hand is a false positive
    dup = ImagePrediction(
        torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]]), torch.tensor([0.9, 0.8]), torch.tensor([1, 1])
    )
    assert average_precision([gt], [dup]) == pytest.approx(0.5)


# --- training --------------------------------------------------------------------------------


def tiny_recipe(root: Path, out: Path, epochs: int) -> DetectorTrainRecipe:
    r = DetectorTrainRecipe()
    t = r.train
    t.data_root, t.out_dir, t.epochs, t.batch_size, t.workers = str(root), str(out), epochs, 5, 0
    t.lr, t.warmup_iters, t.hflip, t.lr_steps, t.eval_every, t.save_every = 0.01, 0, 0.0, [100], 0, 0
    t.box_batch_size_per_image, t.rpn_post_nms_top_n_train = 32, 100
    h = r.detector.hircnn
    h.min_size, h.max_size, h.rpn_post_nms_top_n_test = 128, 160, 50
    r.detector.device = "cpu"
    return r


def test_training_lowers_the_loss_resumes_and_evaluates(tiny_voc, tmp_path):
    from maskahand.detector.train import train

    root, _ = tiny_voc
    out = tmp_path / "run"
    recipe = tiny_recipe(root, out, epochs=4)
    recipe.train.multiscale_min_sizes = [112, 120]  # with detector.hircnn.min_size 128
    train(recipe)  # 4 steps of one batch holding all 5 images
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [rec["loss_mean"] for rec in log]
    assert [rec["epoch"] for rec in log] == [0, 1, 2, 3]
    assert (losses[2] + losses[3]) / 2 < 0.9 * losses[0], losses

    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert set(ckpt) == {"model", "optimizer", "lr_scheduler", "scaler", "epoch", "config"}
    assert ckpt["epoch"] == 3 and ckpt["config"]["train"]["epochs"] == 4

    resumed = tiny_recipe(root, out, epochs=5)
    resumed.train.resume = str(out / "checkpoint.pth")
    record = train(resumed)
    assert record["epoch"] == 4  # only the missing epoch ran
    assert len((out / "log.jsonl").read_text().splitlines()) == 5

    # the checkpoint is in the authors' layout: `maskahand detector eval` takes it as weights
    rc = cli_main(
        [
            "detector",
            "eval",
            "--data",
            str(root),
            "--weights",
            str(out / "checkpoint.pth"),
            "--split",
            "val",
            "--out",
            str(tmp_path / "eval"),
            "detector.device=cpu",
            "train.workers=0",
            "detector.hircnn.min_size=128",
            "detector.hircnn.max_size=160",
            "detector.hircnn.rpn_post_nms_top_n_test=50",
        ]
    )
    assert rc == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["images"] == 5 and metrics["split"] == "val"
    assert 0.0 <= metrics["ap_hand_state"] <= metrics["ap_hand"] <= 1.0
    assert (tmp_path / "eval" / "config.yaml").is_file()


def test_ddp_training_under_torchrun(tiny_voc, tmp_path):
    """Two CPU processes (gloo) launched by torchrun: DistributedSampler, DDP, loss averaged over ranks."""
    import os
    import subprocess
    import sys

    root, _ = tiny_voc
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "maskahand.cli",
        "detector",
        "train",
        "--data",
        str(root),
        "--out",
        str(out),
        "detector.device=cpu",
        "train.epochs=1",
        "train.batch_size=2",
        "train.workers=0",
        "train.warmup_iters=0",
        "train.eval_every=1",
        "train.save_every=0",
        "train.box_batch_size_per_image=32",
        "train.rpn_post_nms_top_n_train=100",
        "detector.hircnn.min_size=128",
        "detector.hircnn.max_size=160",
        "detector.hircnn.rpn_post_nms_top_n_test=50",
        "train.lr=0.005",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # rank 0 only
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["epoch"] == 0
    # 5 images over 2 ranks, batch 2: DistributedSampler gives each rank 3 images -> 2 iterations
    assert len(log[0]["losses"]) == 2
    assert set(log[0]) >= {"ap_hand", "ap_hand_state"}
    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["model"])  # saved unwrapped: the authors' layout


def test_coco_initialised_backbone_keeps_frozen_batch_norm(tiny_voc, tmp_path):
    """torchvision builds a pretrained fasterrcnn_resnet50_fpn_v2 with FrozenBatchNorm2d in the ResNet
    body (the authors trained hircnn so): COCO statistics must not drift to the tiny batches' ones."""
    from maskahand.detector.hircnn import build_hircnn_model
    from maskahand.detector.train import train

    root, _ = tiny_voc
    torch.manual_seed(0)
    coco = build_hircnn_model(tiny_recipe(root, tmp_path, 1).detector.hircnn).state_dict()
    coco_path = tmp_path / "coco.pth"
    torch.save(coco, coco_path)
    out = tmp_path / "run"
    recipe = tiny_recipe(root, out, epochs=1)
    recipe.train.coco_weights = str(coco_path)
    train(recipe)
    model = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)["model"]
    stats = [
        k for k in coco if k.startswith("backbone.body.") and k.endswith(("running_mean", "running_var"))
    ]
    assert stats
    for key in stats:
        assert torch.equal(model[key], coco[key]), key
    # the checkpoint (no BatchNorm counters in the body) still loads into the inference model
    from maskahand.detector.hircnn import load_into, read_state_dict

    load_into(build_hircnn_model(recipe.detector.hircnn), read_state_dict(out / "checkpoint.pth"), "ckpt")
