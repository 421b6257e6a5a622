"""How the authors' event windows and the grid windows differ on the same detections.

Reads the per-frame detections a ``maskahand mine`` run recorded (``OUT/parts/*.frames.jsonl``), applies
both clip rules (``mine.windows=authors`` and ``grid``, every other ``mine.*`` setting as that run's
``config.yaml``) and prints, per video and in total: clips kept by each, clips identical in both
(same start and stop), sampled frames covered by each and by both, and interacting frames covered. No
detector runs again, so any mined collection can be compared in seconds.

    python -m benchmarks.windows --mined OUT [--json results.json]
    make bench-windows MINED=OUT
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path


def video_frames(mined: Path) -> dict[str, list[dict]]:
    """video_id -> its recorded frames, from the run's ledger (ok videos) and parts/."""
    from maskahand.mine.ledger import video_stem

    out: dict[str, list[dict]] = {}
    for line in (mined / "ledger.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("status") != "ok":
            continue
        part = mined / "parts" / f"{video_stem(rec['video_id'])}.frames.jsonl"
        out[rec["video_id"]] = [json.loads(x) for x in part.read_text().splitlines() if x.strip()]
    return out


def compare(frames: list[dict], cfg) -> dict[str, int]:
    from maskahand.mine.rule import interacting_mask, select_clips

    result: dict[str, int] = {"frames": len(frames)}
    sets = {}
    for windows in ("authors", "grid"):
        rule = replace(cfg, windows=windows)
        mask = interacting_mask([f["hands"] for f in frames], rule)
        clips = select_clips(mask, rule)
        sets[windows] = {(c.start, c.stop) for c in clips}
        covered = {i for c in clips for i in range(c.start, c.stop)}
        result[f"{windows}_clips"] = len(clips)
        result[f"{windows}_frames_covered"] = len(covered)
        result[f"{windows}_interacting"] = sum(mask)
        result[f"{windows}_interacting_covered"] = sum(1 for i in covered if mask[i])
        sets[f"{windows}_covered"] = covered  # type: ignore[assignment]
    result["identical_clips"] = len(sets["authors"] & sets["grid"])
    result["frames_covered_by_both"] = len(sets["authors_covered"] & sets["grid_covered"])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mined", required=True, help="a `maskahand mine` output folder")
    p.add_argument("--json", help="also write the table as JSON here")
    args = p.parse_args(argv)
    from maskahand.core.config import MineRecipe
    from maskahand.core.configbase import load_config

    mined = Path(args.mined)
    if not (mined / "ledger.jsonl").is_file():
        raise SystemExit(f"{mined}/ledger.jsonl not found: --mined takes a `maskahand mine` output folder")
    cfg = load_config(MineRecipe, mined / "config.yaml").mine
    rows = {video: compare(frames, cfg) for video, frames in sorted(video_frames(mined).items())}
    total = {k: sum(r[k] for r in rows.values()) for k in next(iter(rows.values()), {})}
    cols = [
        ("frames", "frames"),
        ("authors_clips", "authors"),
        ("grid_clips", "grid"),
        ("identical_clips", "same"),
        ("authors_frames_covered", "cov.A"),
        ("grid_frames_covered", "cov.G"),
        ("frames_covered_by_both", "cov.both"),
        ("authors_interacting", "inter"),
        ("authors_interacting_covered", "inter.A"),
        ("grid_interacting_covered", "inter.G"),
    ]
    print(
        f"rule settings from {mined / 'config.yaml'}: fps {cfg.fps:g}, clip {cfg.clip_length}/{cfg.clip_stride}"
    )
    print("| video | " + " | ".join(h for _, h in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, r in [*rows.items(), ("total", total)]:
        print(f"| {name} | " + " | ".join(str(r[k]) for k, _ in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"videos": rows, "total": total}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
