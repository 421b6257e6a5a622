"""``maskahand eval`` end to end on a stand-in OPRA tree (real annotations subset, real encoded clips):
baselines from annotations alone, a zero-shot and a fine-tuned checkpoint, and 2-process torchrun = 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maskahand.cli import main
from maskahand.evaluation.benchmark import Entry, load_benchmark
from maskahand.evaluation.evaluate import per_action_maps
from maskahand.evaluation.metrics import gt_map_28, score_28
from tests.eval_standin import make_opra_tree, pick_entries

pytestmark = pytest.mark.usefixtures("torch_one_thread")
SMALL = ["eval.image_size=64", "eval.device=cpu", "eval.clip_batch=2"]


@pytest.fixture(scope="module")
def opra_tree(shared_data, tmp_path_factory) -> Path:
    real = json.loads((shared_data / "opra" / "test.json").read_text())
    entries = pick_entries(real, images=3, max_entries=5)
    two = next(e for e in real if len(e["actions"]) == 2)  # an entry scored against two action maps
    return make_opra_tree(tmp_path_factory.mktemp("opra"), shared_data, [*entries, two])


def save_checkpoint(path: Path, heatmaps: int, actions: int) -> Path:
    from maskahand.afformer import build_model
    from maskahand.core.config import AfformerConfig
    from maskahand.core.configbase import to_dict
    from maskahand.runtime.checkpoint_files import FORMAT

    torch.manual_seed(0)
    cfg = AfformerConfig(
        hidden=32,
        heads=2,
        num_heatmaps=heatmaps,
        num_actions=actions,
        max_kv_thw=[8, 8, 8],
        max_q_thw=[1, 16, 16],
    )
    model = build_model(cfg)
    torch.save({"format": FORMAT, "model": model.state_dict(), "config": {"model": to_dict(cfg)}}, path)
    return path


def read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def check_schema(m: dict, dataset: str, n256: int, n28: int) -> None:
    assert set(m) == {"dataset", "split", "model", "protocols"} and m["dataset"] == dataset
    p256, p28 = m["protocols"]["256"], m["protocols"]["28"]
    assert set(p256) == {"kld", "sim", "auc_j", "top1", "n"} and p256["n"] == n256
    assert set(p28) == {"kld", "sim", "auc_j", "n"} and p28["n"] == n28
    for key in ("kld", "sim", "auc_j"):
        assert isinstance(p256[key], float)
        assert len(p28[key]) == 2 and all(isinstance(v, float) for v in p28[key])


def test_center_bias_from_annotations_alone(opra_tree, tmp_path):
    ann = opra_tree / "annotations" / "test.json"
    out = tmp_path / "cb"
    assert (
        main(
            [
                "eval",
                "--dataset",
                "opra",
                "--annotations",
                str(ann),
                "--baseline",
                "center-bias",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    bench = load_benchmark("opra", ann)
    m = read_metrics(out)
    check_schema(m, "opra", bench.num_maps(), len(bench.pairs()))
    assert m["model"] == "center-bias" and m["protocols"]["256"]["top1"] is None
    # the 28 figure equals scoring the Hotspots map directly against the pairs' ground truth
    from maskahand.evaluation.baselines import center_bias_map

    pairs = bench.pairs()
    gts = torch.stack([gt_map_28([p for i in idx for p in bench.entries[i].points_of(a)], 256, 256)
                       for (_, a), idx in pairs.items()])  # fmt: skip
    direct, _ = score_28(center_bias_map()[None].expand(len(pairs), -1, -1), gts)
    assert m["protocols"]["28"]["kld"] == pytest.approx(list(direct.kld), rel=1e-9)
    md = (out / "results.md").read_text()
    assert "| **ours: center-bias** |" in md and "| paper: Center Bias | 11.130 | 0.210 | 0.630 |" in md
    from PIL import Image

    with Image.open(out / "overlays.png") as im:
        assert im.width >= 2 * 230 and im.height >= 3 * 250  # 3 rows (best / median / worst) x (pred, GT)


def test_per_action_maps_route_channels():
    entry = Entry(0, "i", "v", 4, 4, actions=(3, 1, 3), points=((), (), ()))
    pred = torch.arange(1, 8, dtype=torch.float64)[:, None, None].expand(7, 4, 4)
    assert per_action_maps(pred, entry, 7, "m")[:, 0, 0].tolist() == [2.0, 4.0]  # actions 1 and 3
    assert per_action_maps(pred[:1], entry, 7, "m").shape == (2, 4, 4)  # zero-shot: one map, both actions
    with pytest.raises(ValueError, match=r"5 heatmaps for entry 0 \(i\)"):
        per_action_maps(pred[:5], entry, 7, "m")


def run_cli(args: list[str], processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if processes == 1:
        cmd = [sys.executable, "-m", "maskahand.cli"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "maskahand.cli"]  # fmt: skip
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_zero_shot_checkpoint_one_and_two_processes_agree(opra_tree, tmp_path):
    ckpt = save_checkpoint(tmp_path / "zs.pt", heatmaps=1, actions=0)
    args = ["eval", "--dataset", "opra", "--data", str(opra_tree), "--checkpoint", str(ckpt)]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*args, "--out", str(one), *SMALL]) == 0
    proc = run_cli([*args, "--out", str(two), *SMALL], processes=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bench = load_benchmark("opra", None, opra_tree)
    m1, m2 = read_metrics(one), read_metrics(two)
    check_schema(m1, "opra", bench.num_maps(), len(bench.pairs()))
    assert m1["protocols"]["256"]["top1"] is None  # zero-shot: no action head
    for proto in ("256", "28"):
        for key, value in m1["protocols"][proto].items():
            expected = value if value is None else pytest.approx(value, rel=1e-9)
            assert m2["protocols"][proto][key] == expected, (proto, key)
    assert m1["protocols"]["256"]["kld"] != pytest.approx(read_metrics_cb(opra_tree, tmp_path), rel=1e-3)


def read_metrics_cb(tree: Path, tmp: Path) -> float:
    out = tmp / "uniform"
    ann = tree / "annotations" / "test.json"
    main(["eval", "--annotations", str(ann), "--baseline", "uniform", "--out", str(out), "--protocol", "256"])
    return read_metrics(out)["protocols"]["256"]["kld"]


def test_fine_tuned_checkpoint_scores_actions(opra_tree, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "ft.pt", heatmaps=7, actions=7)
    out = tmp_path / "ft"
    args = [
        "eval",
        "--data",
        str(opra_tree),
        "--checkpoint",
        str(ckpt),
        "--out",
        str(out),
        "--protocol",
        "256",
    ]
    assert main([*args, *SMALL, "eval.max_clips=1"]) == 0
    p = read_metrics(out)["protocols"]
    assert set(p) == {"256"} and 0.0 <= p["256"]["top1"] <= 1.0
    # a missing clip names the entry
    bench = load_benchmark("opra", None, opra_tree)
    bench.resolve(bench.entries[0].video).rename(tmp_path / "moved.mp4")
    try:
        assert main([*args, *SMALL]) != 0
        assert "entry 0 (datasets/opra/images/" in capsys.readouterr().err
    finally:
        (tmp_path / "moved.mp4").rename(bench.resolve(bench.entries[0].video))


@pytest.mark.parametrize("layout", ["ours", "authors"])
def test_a_plain_state_dict_of_another_size_loads_with_its_own_size(layout, tmp_path, torch_one_thread):
    """Width, heads and table sizes come from the tensors (not the paper's 256 / 4), and the loaded model
    computes what the saved one did."""
    from dataclasses import replace

    from maskahand.afformer import build_model
    from maskahand.core.config import AfformerConfig
    from maskahand.evaluation.afformer_predictor import load_afformer
    from maskahand.pretrain.evaluate import authors_state_dict

    torch.manual_seed(0)
    cfg = AfformerConfig(
        hidden=64, heads=2, num_heatmaps=2, num_actions=3, max_q_thw=[1, 16, 16], max_kv_thw=[8, 12, 12]
    )
    model = build_model(cfg).eval()
    with torch.no_grad():  # trained-looking tables, so a wrong row or head split changes the output
        for name, p in model.named_parameters():
            if "rel_pos" in name or "level_embeds" in name:
                p.normal_(0, 0.5)
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict() if layout == "ours" else authors_state_dict(model), path)
    loaded, got = load_afformer(path)
    assert (got.hidden, got.heads, got.num_heatmaps, got.num_actions) == (64, 2, 2, 3)
    assert got.max_q_thw == [1, 16, 16]
    assert got.max_kv_thw[1:] == [16, 16]  # a cross table covers max(query, key) sizes: 16, not 12
    assert got.max_kv_thw[0] == AfformerConfig().max_kv_thw[0]  # the longer default time table, extended
    g = torch.Generator().manual_seed(1)
    video = torch.randint(0, 256, (1, 6, 3, 64, 64), dtype=torch.uint8, generator=g)
    image = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        a, b = model.predict(video, image), loaded.predict(video, image)
    torch.testing.assert_close(b.heatmaps, a.heatmaps, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b.actions, a.actions, rtol=1e-5, atol=1e-7)
    # the paper's 4 heads would not even load these tables: the head split is read off, not assumed
    with pytest.raises(RuntimeError, match="rel_pos"):
        build_model(replace(got, heads=4)).load_state_dict(loaded.state_dict())
