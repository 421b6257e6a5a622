"""The per-video ledger of a mining output, and what makes a run resumable.

Layout of a mining output ``OUT``::

    config.yaml             the resolved recipe (a resumed run must match it)
    ledger.jsonl            one fsync'd line per finished video: ok / failed / skipped (last line wins)
    shards/<stem>-NNNNNN.tar (+ .tar.json)   clip shards, named from the video (stem = hash of its id)
    parts/<stem>.jsonl      the manifest rows of one video
    parts/<stem>.frames.jsonl   every sampled frame of it: source index, pts, detected hands (an audit
                            trail: the rule can be re-checked or re-run without detecting again)
    .staging/<stem>/        shards of the video being mined (moved into shards/ when it is complete)
    manifest.jsonl          one row per clip, rebuilt from the parts of the ``ok`` videos after each run
    summary.json            totals over the ledger

A video counts as done only once its ledger line is on disk, and that line is appended only after its
shards and manifest part are in place. So a run killed at any moment leaves, for unfinished videos, at
most staging files, some shards and a part that no ledger line claims: :func:`clean_unclaimed` removes
exactly those before the restart redoes the videos, which then produce the same names again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from maskahand.fsutil import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl

Status = Literal["ok", "failed", "skipped"]
LEDGER = "ledger.jsonl"
MANIFEST = "manifest.jsonl"
SUMMARY = "summary.json"
SHARDS = "shards"
PARTS = "parts"
STAGING = ".staging"


def video_stem(video_id: str) -> str:
    """File-name stem for a video's shards and clip keys: stable, short, no dots (webdataset keys)."""
    return hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:16]


def fingerprint(path: str | Path) -> dict[str, int]:
    """Size and mtime of an input: a changed file is mined again on resume."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file())
        return {"size": sum(f.stat().st_size for f in files), "files": len(files)}
    st = p.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass
class VideoRecord:
    video_id: str
    path: str
    status: Status
    reason: str = ""
    frames: int = 0  # sampled frames decoded and detected
    clips: int = 0
    seconds: float = 0.0  # wall time spent on this video
    duration: float = 0.0  # seconds of video (source duration)
    shards: list[str] = field(default_factory=list)  # names under shards/
    fingerprint: dict[str, int] = field(default_factory=dict)
    finished_at: float = field(default_factory=time.time)
    node: dict[str, str] = field(default_factory=dict)  # where it was mined: Ray node id and host name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoRecord:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


def _drop_torn_tail(path: Path) -> None:
    """Cut an unterminated last line (a crash mid-append), so that the next append starts a line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())


class Ledger:
    """Append-only JSON-lines ledger; the last line of a video is its state."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LEDGER
        self.records: dict[str, VideoRecord] = {}
        _drop_torn_tail(self.path)
        for d in read_jsonl(self.path):
            rec = VideoRecord.from_dict(d)
            self.records[rec.video_id] = rec

    def append(self, rec: VideoRecord) -> None:
        append_jsonl(self.path, rec.to_dict())
        self.records[rec.video_id] = rec

    def is_done(self, video_id: str, fp: dict[str, int] | None, retry_failed: bool) -> bool:
        rec = self.records.get(video_id)
        if rec is None:
            return False
        if retry_failed and rec.status == "failed":
            return False
        return fp is None or not rec.fingerprint or rec.fingerprint == fp

    def claimed_shards(self) -> set[str]:
        return {name for rec in self.records.values() if rec.status == "ok" for name in rec.shards}

    def ok_stems(self) -> set[str]:
        return {video_stem(v) for v, rec in self.records.items() if rec.status == "ok"}


def clean_unclaimed(out_dir: str | Path, ledger: Ledger, redo: Iterable[str] = ()) -> list[str]:
    """Remove staging files, and shards and manifest parts that no ``ok`` ledger line claims or that
    belong to the video stems in ``redo`` (about to be mined again)."""
    out = Path(out_dir)
    redo = set(redo)
    removed: list[str] = []
    staging = out / STAGING
    if staging.exists():
        if any(staging.iterdir()):
            removed.append(str(staging))
        shutil.rmtree(staging)
    claimed = ledger.claimed_shards()
    for f in sorted((out / SHARDS).glob("*")) if (out / SHARDS).is_dir() else []:
        shard = f.name[: -len(".json")] if f.name.endswith(".tar.json") else f.name
        if shard not in claimed or shard.split("-")[0] in redo:
            f.unlink()
            removed.append(str(f))
    ok = ledger.ok_stems() - redo
    for f in sorted((out / PARTS).glob("*")) if (out / PARTS).is_dir() else []:
        if f.name.split(".")[0] not in ok or not f.name.endswith(".jsonl"):
            f.unlink()
            removed.append(str(f))
    return removed


def publish_video(out_dir: str | Path, stem: str, rows: list[dict[str, Any]]) -> list[str]:
    """Move a finished video's staged shards into ``shards/`` and write its manifest part.

    Returns the shard names. Called before the ledger line is appended (see the module doc).
    """
    out = Path(out_dir)
    staging = out / STAGING / stem
    dest = out / SHARDS
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    files = sorted(staging.iterdir()) if staging.is_dir() else []
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.name == frames_log_name(stem):
            os.replace(f, out / PARTS / f.name)
        elif f.name.endswith(".tar") or f.name.endswith(".tar.json"):
            os.replace(f, dest / f.name)
            if f.name.endswith(".tar"):
                names.append(f.name)
        # anything else is a writer's leftover temporary file (.partial, .tmp)
    if staging.is_dir():
        shutil.rmtree(staging)
    _fsync_dir(dest)
    _fsync_dir(out / PARTS)
    import json

    atomic_write_text(
        out / PARTS / f"{stem}.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    )
    return sorted(names)


def frames_log_name(stem: str) -> str:
    return f"{stem}.frames.jsonl"


def discard_video(out_dir: str | Path, stem: str) -> None:
    """Drop whatever a failed video staged."""
    staging = Path(out_dir) / STAGING / stem
    if staging.exists():
        shutil.rmtree(staging)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rebuild_manifest(out_dir: str | Path, ledger: Ledger) -> int:
    """``manifest.jsonl`` from the parts of ``ok`` videos, sorted by (video id, first frame). Returns rows."""
    import json

    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for video_id, rec in ledger.records.items():
        if rec.status != "ok":
            continue
        rows.extend(read_jsonl(out / PARTS / f"{video_stem(video_id)}.jsonl"))
    rows.sort(key=lambda r: (r["video_id"], r["start"]))
    atomic_write_text(out / MANIFEST, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return len(rows)


def summarize(ledger: Ledger, video_ids: Iterable[str], wall_seconds: float, frames_this_run: int) -> dict:
    """Totals over the videos of this input (ledger state after the run)."""
    recs = [ledger.records[v] for v in video_ids if v in ledger.records]
    by_status = {s: sum(r.status == s for r in recs) for s in ("ok", "failed", "skipped")}
    frames = sum(r.frames for r in recs)
    return {
        "videos": len(recs),
        **{f"videos_{k}": v for k, v in by_status.items()},
        "frames": frames,
        "clips": sum(r.clips for r in recs),
        "hours_of_video": sum(r.duration for r in recs) / 3600.0,
        "frames_this_run": frames_this_run,
        "wall_seconds_this_run": wall_seconds,
        "frames_per_second_this_run": frames_this_run / wall_seconds if wall_seconds > 0 else 0.0,
        "failed": {r.video_id: r.reason for r in recs if r.status == "failed"},
        "videos_per_node": _videos_per_node(recs),
    }


def _videos_per_node(recs: list[VideoRecord]) -> dict[str, int]:
    """Videos mined per Ray node (``host/node id``); failed videos and older ledger lines have no node."""
    counts: dict[str, int] = {}
    for r in recs:
        if not r.node:
            continue
        key = f"{r.node.get('host', '')}/{r.node.get('node_id', '')}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def write_summary(out_dir: str | Path, summary: dict) -> None:
    atomic_write_json(Path(out_dir) / SUMMARY, summary)
