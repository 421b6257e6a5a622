"""AssistQ Buttons reader (the authors' data/assistq_button layout) on a small tree the test writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from maskahand.cli import main
from maskahand.evaluation.benchmark import AnnotationError, load_benchmark
from maskahand.evaluation.groundtruth import GroundTruth
from tests.test_eval_e2e import SMALL, save_checkpoint

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def make_tree(root: Path, shared: Path) -> Path:
    frames = sorted((shared / "frames" / "epic_P01_01").glob("frame_*.jpg"))[:3]
    entries = []
    for i in range(2):
        img = root / "images" / f"{i}.jpg"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.open(frames[i]).convert("RGB").resize((320, 240)).save(img)
        rel = [str(f) for f in frames]  # absolute frame paths are used as they are
        entries.append({"image_path": f"datasets/assistq_button/images/{i}.jpg", "frames_path": rel,
                        "boxes": [[0, 0, 159, 119]] if i == 0 else [[10, 10, 20, 20], [15, 15, 30, 30]]})  # fmt: skip
    for name in ("train.json", "test_v2.json"):
        (root / name).write_text(json.dumps(entries))
    return root


def test_boxes_become_filled_maps_at_256(shared_data, tmp_path):
    root = make_tree(tmp_path / "aq", shared_data)
    bench = load_benchmark("assistq", None, root)
    assert len(bench.entries) == 2 and bench.num_actions == 1
    gt = GroundTruth(bench, progress=False)
    m = gt.maps_256(0)[0]
    # box [0,0,159,119] in 320x240 -> x2 = int(127.2) = 127, y2 = int(126.9) = 126: 127 rows x 128 cols
    assert float(m.sum()) == 127 * 128 and float(m[126, 127]) == 1.0 and float(m[127, 127]) == 0.0
    two = gt.maps_256(1)[0]
    assert float(two.max()) == 2.0  # overlapping boxes add up
    with pytest.raises(ValueError, match="28 x 28"):
        gt.maps_28()


def test_bad_box_names_the_entry(tmp_path):
    p = tmp_path / "test_v2.json"
    p.write_text(json.dumps([{"image_path": "a.jpg", "frames_path": ["f.jpg"], "boxes": [[5, 5, 1, 1]]}]))
    with pytest.raises(AnnotationError, match=r"entry 0 \(a.jpg\): each box"):
        load_benchmark("assistq", p)


def test_checkpoint_eval_on_frame_lists(shared_data, tmp_path):
    root = make_tree(tmp_path / "aq", shared_data)
    ckpt = save_checkpoint(tmp_path / "zs.pt", heatmaps=1, actions=0)
    out = tmp_path / "out"
    args = ["eval", "--dataset", "assistq", "--data", str(root), "--checkpoint", str(ckpt), "--out", str(out)]
    assert main([*args, "--protocol", "256", *SMALL]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"] == "assistq" and m["protocols"]["256"]["n"] == 2
    assert torch.isfinite(torch.tensor(m["protocols"]["256"]["kld"]))
