"""Clip shards -> MaskAHand shards: batched synthesis per shard, Ray tasks across shards, resume.

Each input shard ``NAME.tar`` becomes one output shard ``NAME.tar`` (same name) holding one
:class:`MaskAHandSample` per clip that has an interacting frame. A shard is finished when its manifest
``NAME.tar.json`` is there and matches the tar's bytes and sha256; a rerun skips finished shards,
removes the temporary files of killed runs and redoes the rest, so nothing is duplicated. Input shards
without any usable clip produce no tar; the ledger ``synth_ledger.jsonl`` records them as done.
With ``--address`` (a Ray cluster), local input and output folders must be visible to every node.

``--clips`` and ``--out`` may be object-store URLs (``s3://...``): input shards are streamed, each output
shard is written in the task's node-local temporary folder and uploaded under its final name, its
manifest after it (a reader never sees half a shard; a shard without its manifest is redone), and each
ledger record is its own object ``synth_ledger.d/NAME.json`` (object stores cannot append). There a
finished shard is one whose manifest gives the uploaded tar's size (the sha256 is checked locally only:
an object is whole once visible).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from ..core import storage
from ..core.config import ShardWriterConfig, SynthConfig, SynthRecipe
from ..core.configbase import check_resume, save_config
from ..core.fsutil import append_jsonl, atomic_write_json, read_jsonl
from ..core.rayutil import init_ray, node_record
from ..shards.check import manifest_matches
from ..shards.schema import MASKAHAND_SCHEMA, ClipSample, MaskAHandSample
from ..shards.writer import ShardWriter
from . import recipe as rc
from .clipio import read_clip_shard, resolve_device

log = logging.getLogger(__name__)

LEDGER = "synth_ledger.jsonl"
LEDGER_ENTRIES = "synth_ledger.d"
SUMMARY = "synth_summary.json"


class SynthError(RuntimeError):
    """One or more input shards could not be synthesized."""


def synthesize_clips(
    clips: Sequence[ClipSample], cfg: SynthConfig, clip_shard: str
) -> tuple[list[MaskAHandSample], list[str]]:
    """MaskAHand samples for clips whose frames sit on the device to use; and the keys of skipped clips.

    ``clip_shard`` is the file name of the clip shard the clips come from: each sample's meta names it
    (with ``clip_key``), so :func:`maskahand.synth.provenance.replay_sample` can find the source frames.
    A clip without any interacting hand box is skipped. All targets of all clips are rendered in
    batches of ``cfg.batch_size`` frames of one size.
    """
    kept: list[tuple[ClipSample, list[rc.Provenance]]] = []
    skipped: list[str] = []
    for clip in clips:
        try:
            params = [rc.sample_params(cfg, clip.key, clip.meta, v) for v in range(cfg.variants)]
        except rc.NoInteractingFrameError:
            skipped.append(clip.key)
            continue
        kept.append((clip, params))
    chosen = [clip.frames[p["frame"]] for clip, params in kept for p in params]
    all_params = [p for _, params in kept for p in params]
    targets, heatmaps = rc.render_grouped(chosen, all_params, cfg.batch_size) if all_params else ([], [])
    samples = []
    for i, (clip, params) in enumerate(kept):
        k = slice(i * cfg.variants, (i + 1) * cfg.variants)
        meta = {
            "schema": MASKAHAND_SCHEMA,
            "clip_key": clip.key,
            "clip_shard": clip_shard,
            "video_id": clip.meta["video_id"],
            "size": cfg.output_size,
            "targets": params,
        }
        samples.append(
            MaskAHandSample(
                key=clip.key,
                frames=rc.resize_frames(clip.frames, cfg.output_size).cpu(),
                targets=torch.stack(targets[k]).cpu(),
                heatmaps=torch.stack(heatmaps[k]).float().cpu(),
                meta=meta,
            )
        )
    return samples, skipped


def _batches(clips: Iterable[ClipSample], targets_per_batch: int, variants: int):
    batch: list[ClipSample] = []
    for clip in clips:
        batch.append(clip)
        if len(batch) * variants >= targets_per_batch:
            yield batch
            batch = []
    if batch:
        yield batch


def process_shard(in_path: str | Path, out_dir: str | Path, recipe: SynthRecipe) -> dict[str, Any]:
    """Synthesize one input shard into ``out_dir/<same name>``; returns its ledger record."""

    if storage.is_url(str(out_dir)):  # write in a local temporary folder, then upload the finished shard
        with tempfile.TemporaryDirectory(prefix="maskahand-synth-") as tmp:
            made = process_shard(in_path, tmp, recipe)
            if made["output"] is not None:
                tar = Path(tmp) / made["output"]
                storage.upload_file(tar, storage.join(str(out_dir), tar.name))
                storage.upload_file(
                    tar.with_name(tar.name + ".json"), storage.join(str(out_dir), tar.name + ".json")
                )
            return made

    name = storage.name_of(str(in_path))
    out_dir = Path(out_dir)
    cfg = recipe.synth
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    # One input shard -> exactly one output shard: never roll by count or size.
    writer_cfg = ShardWriterConfig(
        max_samples=10**9,
        max_bytes=2**62,
        jpeg_quality=recipe.shards.jpeg_quality,
        target_format=recipe.shards.target_format,
    )
    record: dict[str, Any] = {"input": name, "output": None, "clips": 0, "written": 0, "skipped": []}
    with ShardWriter(out_dir, "maskahand", writer_cfg, kind="maskahand") as writer:
        writer.set_next_name(name)
        for clips in _batches(read_clip_shard(in_path, device), cfg.batch_size, cfg.variants):
            samples, skipped = synthesize_clips(clips, cfg, name)
            record["clips"] += len(clips)
            record["skipped"] += skipped
            for sample in samples:
                writer.write(sample)
            record["written"] += len(samples)
    if writer.finished:
        record["output"] = writer.finished[0].path.name
    record["targets"] = record["written"] * cfg.variants
    record["device"] = str(device)
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def finished_output(out_dir: Path | str, name: str, listing: dict[str, int] | None = None) -> bool:
    """Is ``out_dir/name`` a complete shard (manifest present, matching the tar's size and sha256)?

    An object-store output: the manifest is there and gives the tar's size (``listing``: name -> size).
    """
    if isinstance(out_dir, str):
        sizes = listing if listing is not None else _sizes(out_dir)
        if name not in sizes or name + ".json" not in sizes:
            return False
        try:
            manifest = json.loads(storage.read_bytes(storage.join(out_dir, name + ".json")))
        except (FileNotFoundError, ValueError):
            return False
        return isinstance(manifest, dict) and manifest.get("bytes") == sizes[name]
    return manifest_matches(out_dir / name)


def _sizes(out_dir: str) -> dict[str, int]:
    """Object-store output: ``{name: size}`` of the objects directly under it."""
    fs, p = storage.filesystem(out_dir)
    fs.invalidate_cache()
    try:
        entries = fs.ls(p, detail=True)
    except FileNotFoundError:
        return {}
    return {e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0) for e in entries}


def remove_stale_temporaries(out_dir: Path | str, names: Iterable[str]) -> list[Any]:
    """Delete what killed runs left for the shards ``names``: partial tars, temp files, unmanifested tars."""
    if isinstance(out_dir, str):  # object store: only a tar uploaded without its manifest can be left
        sizes = _sizes(out_dir)
        gone = [storage.join(out_dir, n) for n in names if n in sizes and n + ".json" not in sizes]
        storage.remove(gone)
        return gone
    stale = list(out_dir.glob(".*.tmp"))
    for name in names:
        tar = out_dir / name
        stale.append(out_dir / (name + ".partial"))
        # Killed between the tar's rename and its manifest: the tar is complete but unverifiable.
        if tar.is_file() and not (out_dir / (name + ".json")).is_file():
            stale.append(tar)
    stale = [p for p in stale if p.exists()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _ledger_records(out_dir: Path | str) -> Iterable[dict[str, Any]]:
    if isinstance(out_dir, str):
        entries = storage.listdir(storage.join(out_dir, LEDGER_ENTRIES))
        found = storage.read_many(entries)
        return [json.loads(found[u]) for u in entries if u in found]
    return read_jsonl(out_dir / LEDGER)


def _record(out_dir: Path | str, rec: dict[str, Any]) -> None:
    if isinstance(out_dir, str):  # one object per input shard: the last record of a shard wins
        body = (json.dumps(rec, sort_keys=True) + "\n").encode("utf-8")
        storage.put_bytes(storage.join(out_dir, LEDGER_ENTRIES, rec["input"] + ".json"), body)
    else:
        append_jsonl(out_dir / LEDGER, rec)


def _done_inputs(out_dir: Path | str, names: list[str]) -> dict[str, dict[str, Any]]:
    """Input shards a previous run finished: a valid output shard, or a ledger record with no output."""
    records: dict[str, dict[str, Any]] = {}
    for rec in _ledger_records(out_dir):
        if "error" not in rec:
            records[rec["input"]] = rec
    listing = _sizes(out_dir) if isinstance(out_dir, str) else None
    done = {}
    for name in names:
        found = records.get(name)
        if finished_output(out_dir, name, listing):
            done[name] = found or {"input": name, "output": name}
        elif found is not None and found.get("output") is None:
            done[name] = found
    return done


def _task(
    in_path: str, out_dir: str, recipe: SynthRecipe, threads: int, env: dict[str, str] | None = None
) -> dict[str, Any]:

    storage.setup_worker(recipe.storage.options, env)
    torch.set_num_threads(max(1, threads))
    try:
        rec = process_shard(in_path, out_dir, recipe)
    except Exception as e:  # reported per shard; the driver fails the run at the end
        rec = {"input": storage.name_of(in_path), "error": f"{type(e).__name__}: {e}"}
    rec["node"] = node_record()  # which cluster node did it (synth_ledger.jsonl)
    return rec


def run_synth(
    clips: str | Path, out_dir: str | Path, recipe: SynthRecipe, progress: bool = True
) -> dict[str, Any]:
    """Synthesize every clip shard under ``clips`` into ``out_dir`` with Ray tasks; returns the summary."""
    # deferred: ray at import
    import ray

    # deferred: webdataset at import
    from ..shards.reader import list_shards

    storage.configure(recipe.storage.options)
    out_dir = str(out_dir) if storage.is_url(str(out_dir)) else storage.local_path(out_dir)
    inputs = list_shards(clips)
    names = [storage.name_of(p) for p in inputs]
    if len(set(names)) != len(names):
        raise SynthError(f"{clips}: input shards with the same file name would map to one output shard")
    if _same_folder(out_dir, inputs):
        raise SynthError(
            f"--out {out_dir} holds the input shards: output shards keep their names, use another dir"
        )
    if isinstance(out_dir, str):
        storage.check_bucket(out_dir)
        made = bool(storage.glob(storage.join(out_dir, "*.tar")))
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        made = bool(list(out_dir.glob("*.tar")))
    if made:  # no shard yet: nothing made with the old settings
        check_resume(recipe, out_dir)  # runtime-only settings (device, batch size, Ray) may change
    save_config(recipe, out_dir)
    stale = remove_stale_temporaries(out_dir, names)
    if stale:
        log.info("removed %d temporary files of an interrupted run", len(stale))
    done = _done_inputs(out_dir, names)
    todo = [p for p in inputs if storage.name_of(p) not in done]
    log.info("%d input shards: %d finished before, %d to do", len(inputs), len(done), len(todo))

    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    if todo:
        resources = init_ray(recipe.ray)
        want = recipe.synth.device
        use_gpu = want != "cpu" and resources.get("GPU", 0) > 0
        if want == "cuda" and not use_gpu:
            raise SynthError("synth.device=cuda but the Ray cluster has no GPU")
        worker_recipe = recipe
        if want == "auto" and not use_gpu:
            worker_recipe = _with_device(recipe, "cpu")
        task = ray.remote(_task).options(
            num_cpus=recipe.cpus_per_worker,
            num_gpus=recipe.gpus_per_worker if use_gpu else 0,
            max_retries=0,
            resources=dict(recipe.worker_resources) or None,
        )
        threads = int(recipe.cpus_per_worker)
        env = storage.worker_env()  # as an argument: Ray workers started earlier may lack the variables
        pending = {task.remote(str(p), str(out_dir), worker_recipe, threads, env): p for p in todo}
        targets = 0
        with tqdm(total=len(todo), unit="shard", desc="synth", disable=not progress) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                try:
                    rec = ray.get(ready[0])
                except ray.exceptions.RayError as e:  # the worker died (OOM kill, crash): fail that shard
                    rec = {"input": storage.name_of(pending[ready[0]]), "error": f"{type(e).__name__}: {e}"}
                pending.pop(ready[0])
                _record(out_dir, rec)
                if "error" in rec:
                    failures.append(rec)
                    log.error("shard %s failed: %s", rec["input"], rec["error"])
                else:
                    records.append(rec)
                    targets += rec["targets"]
                bar.update(1)
                bar.set_postfix(targets=targets, rate=f"{targets / (time.perf_counter() - started):.1f}/s")
    seconds = time.perf_counter() - started
    all_records = list(done.values()) + records
    summary = {
        "inputs": len(inputs),
        "resumed": len(done),
        "processed": len(records),
        "failed": [f["input"] for f in failures],
        "clips": sum(r.get("clips", 0) for r in all_records),
        "written": sum(r.get("written", 0) for r in all_records),
        "skipped_no_interaction": sum(len(r.get("skipped", [])) for r in all_records),
        "targets": sum(r.get("targets", 0) for r in all_records),
        "seconds": round(seconds, 3),
        "targets_per_s_this_run": round(sum(r["targets"] for r in records) / seconds, 3) if records else 0.0,
        "shards_per_node": _shards_per_node(all_records),
    }
    if isinstance(out_dir, str):
        text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
        storage.put_bytes(storage.join(out_dir, SUMMARY), text.encode("utf-8"))
    else:
        atomic_write_json(out_dir / SUMMARY, summary)
    if failures:
        raise SynthError(
            "failed shards: "
            + "; ".join(f"{f['input']}: {f['error']}" for f in failures)
            + " (rerun to resume)"
        )
    return summary


def _same_folder(out_dir: Path | str, inputs: list[str]) -> bool:
    if isinstance(out_dir, str):
        return out_dir.rstrip("/") in {storage.parent(p).rstrip("/") for p in inputs}
    local = [p for p in inputs if not storage.is_url(p)]
    return out_dir.resolve() in {Path(p).parent.resolve() for p in local}


def _shards_per_node(records: list[dict[str, Any]]) -> dict[str, int]:
    """Input shards per Ray node (``host/node id``) that synthesized them (records from before: none)."""
    counts: dict[str, int] = {}
    for r in records:
        node = r.get("node") or {}
        if node:
            key = f"{node.get('host', '')}/{node.get('node_id', '')}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _with_device(recipe: SynthRecipe, device: Literal["auto", "cpu", "cuda"]) -> SynthRecipe:

    return dataclasses.replace(recipe, synth=dataclasses.replace(recipe.synth, device=device))
