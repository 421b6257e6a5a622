"""What ``maskahand eval`` writes: metrics.json, results.md (our row beside the paper's), overlays.png.

metrics.json (numbers are floats; ``n`` counts maps for 256 and pairs for 28)::

    {"dataset": "opra", "split": "test", "model": "...",
     "protocols": {"256": {"kld": x, "sim": x, "auc_j": x, "top1": x|null, "n": k},
                   "28": {"kld": [mean, se], "sim": [mean, se], "auc_j": [mean, se], "n": k}}}
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..core.fsutil import atomic_write_json, atomic_write_text
from .benchmark import Benchmark
from .clips import load_image
from .evaluate import EvalResult
from .groundtruth import GroundTruth

# PAPER_FACTS (seed 002 tables 1, 2 and the AssistQ table). 256: KLD (and top-1 %); 28: KLD / SIM / AUC-J.
PAPER_ROWS: dict[tuple[str, str], list[tuple[str, dict[str, float]]]] = {
    ("opra", "256"): [
        ("Demo2Vec", {"kld": 2.34}),
        ("R50-Deconv (supervised)", {"kld": 2.20}),
        ("Afformer R50-FPN", {"kld": 1.55, "top1": 52.14}),
        ("Afformer ViTDet-B", {"kld": 1.51}),
        ("MaskAHand zero-shot R50-Afformer", {"kld": 2.36}),
        ("MaskAHand zero-shot R50-Deconv", {"kld": 2.89}),
        ("MaskAHand fine-tuned R50-Afformer", {"kld": 1.48, "top1": 52.50}),
        ("MaskAHand fine-tuned R50-Deconv", {"kld": 1.74}),
    ],
    ("opra", "28"): [
        ("Center Bias", {"kld": 11.13, "sim": 0.21, "auc_j": 0.63}),
        ("Interaction Hotspots", {"kld": 1.427, "sim": 0.362, "auc_j": 0.806}),
        ("MaskAHand zero-shot", {"kld": 1.86, "sim": 0.28, "auc_j": 0.76}),
        ("Afformer", {"kld": 1.05, "sim": 0.53, "auc_j": 0.89}),
    ],
    ("epic_hotspots", "28"): [
        ("Center Bias", {"kld": 10.66, "sim": 0.22, "auc_j": 0.63}),
        ("Interaction Hotspots", {"kld": 1.258, "sim": 0.404, "auc_j": 0.785}),
        ("MaskAHand zero-shot", {"kld": 1.32, "sim": 0.37, "auc_j": 0.76}),
        ("Afformer", {"kld": 0.97, "sim": 0.56, "auc_j": 0.88}),
    ],
    ("assistq", "256"): [
        ("Afformer", {"kld": 1.13, "sim": 0.44, "top1": 41.0}),
        ("Afformer + MaskAHand", {"kld": 1.01, "sim": 0.54, "top1": 57.0}),
    ],
}


def _f(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def metrics_dict(bench: Benchmark, model: str, result: EvalResult) -> dict:
    protocols: dict[str, dict] = {}
    if result.scores256 is not None:
        s = result.scores256
        protocols["256"] = {
            "kld": _f(s.kld),
            "sim": _f(s.sim),
            "auc_j": _f(s.auc_j),
            "top1": _f(s.top1),
            "n": s.n,
        }
    if result.scores28 is not None:
        s28 = result.scores28
        protocols["28"] = {
            "kld": [_f(v) for v in s28.kld],
            "sim": [_f(v) for v in s28.sim],
            "auc_j": [_f(v) for v in s28.auc_j],
            "n": s28.n,
        }
    return {"dataset": bench.name, "split": bench.split, "model": model, "protocols": protocols}


def _cell(v, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return "-" if v[0] is None else f"{v[0]:.3f} ± {v[1]:.3f}"
    return f"{v * 100:.2f}" if pct else f"{v:.3f}"


def results_markdown(metrics: dict) -> str:
    ds, model = metrics["dataset"], metrics["model"]
    lines = [f"# {ds} ({metrics['split']}): {model}", ""]
    for proto, ours in metrics["protocols"].items():
        size = (
            "256 x 256 (Afformer rule)"
            if proto == "256"
            else "28 x 28 (Interaction Hotspots rule, mean ± s.e.)"
        )
        lines += [f"## {size}, n = {ours['n']} {'maps' if proto == '256' else 'pairs'}", ""]
        lines += ["| method | KLD ↓ | SIM ↑ | AUC-J ↑ | top-1 % ↑ |", "|---|---|---|---|---|"]
        lines.append(
            f"| **ours: {model}** | {_cell(ours['kld'])} | {_cell(ours['sim'])} | {_cell(ours['auc_j'])} | "
            f"{_cell(ours.get('top1'), pct=True)} |"
        )
        for name, row in PAPER_ROWS.get((ds, proto), []):
            top1 = row.get("top1")
            lines.append(
                f"| paper: {name} | {_cell(row.get('kld'))} | {_cell(row.get('sim'))} | "
                f"{_cell(row.get('auc_j'))} | {'-' if top1 is None else f'{top1:.2f}'} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_outputs(
    out: Path, bench: Benchmark, model: str, result: EvalResult, gt: GroundTruth, image_size: int = 256
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    metrics = metrics_dict(bench, model, result)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "results.md", results_markdown(metrics))
    write_overlays(out / "overlays.png", bench, result, gt, image_size)
    return metrics


def pick_best_median_worst(bench: Benchmark, result: EvalResult) -> list[tuple[str, int, int, float]]:
    """(label, entry index, action, KLD): by the 256 per-map KLD when scored, else by the 28 pair KLD
    (shown with the pair's first entry)."""
    rows: list[tuple[float, int, int]] = []
    if result.scores256 is not None:
        for r in result.entries.values():
            rows += [(k, r.index, a) for k, a in zip(r.kld, r.actions)]
    else:
        pairs = bench.pairs()
        rows = [(k, pairs[key][0], key[1]) for key, k in result.pair28.items()]
    rows = [r for r in rows if math.isfinite(r[0])] or rows
    rows.sort()
    picks = [("best", rows[0]), ("median", rows[len(rows) // 2]), ("worst", rows[-1])]
    return [(label, idx, a, k) for label, (k, idx, a) in picks]


def write_overlays(path: Path, bench: Benchmark, result: EvalResult, gt: GroundTruth, size: int) -> Path:
    """Per pick: the target image with the predicted heatmap, then with the ground truth."""
    # deferred: PIL, cv2 at import
    from ..shards.sheet import grid, heatmap_overlay, save_image, titled

    cells = []
    keys = {k: i for i, k in enumerate(gt.pair_keys)}
    for label, idx, action, kld in pick_best_median_worst(bench, result):
        entry = bench.entries[idx]
        r = result.entries[idx]
        assert r.thumbs is not None, "run_eval fills thumbs"
        pred = r.thumbs[r.actions.index(action)]
        if result.scores256 is not None:
            truth = gt.maps_256(idx)[entry.distinct_actions.index(action)]
        else:
            truth = gt.maps_28()[keys[(entry.image, action)]]
        image = _background(bench, entry, size)
        name = bench.action_names[action]
        cells.append(titled(heatmap_overlay(image, _unit(pred)), f"{label}: KLD {kld:.2f}, {name} (pred)"))
        cells.append(titled(heatmap_overlay(image, _unit(truth)), f"entry {idx}: ground truth"))
    save_image(grid(cells, cols=2, cell_side=size), path)
    return path


def _unit(m: torch.Tensor) -> torch.Tensor:
    m = m.float()
    return (m - m.min()) / (m.max() - m.min() + 1e-12)


def _background(bench: Benchmark, entry, size: int) -> torch.Tensor:
    """The target image when it is available, else a grey square (annotation-only runs)."""
    if bench.root is not None:
        try:
            return load_image(bench.resolve(entry.image), size)
        except (OSError, ValueError):
            pass
    return torch.full((3, size, size), 96, dtype=torch.uint8)
