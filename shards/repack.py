"""``maskahand shards repack``: regroup a shard collection into size-targeted shards in a seeded global shuffle.

Mining writes one shard series per video, so a reader that walks shards sees one video at a time. Repacking
lists every sample of every input shard (tar headers only), shuffles that list with ``seed`` and cuts it
into shards of about ``target_size`` bytes: each output shard holds samples drawn from the whole
collection. Members are copied byte for byte (no decoding, no re-encoding), with the writer's fixed tar
headers, so the same inputs and settings give byte-identical outputs.

Resumable and atomic: every output shard is written as ``NAME.tar.partial``, renamed, then its manifest
``NAME.tar.json`` is written (the writer's completion marker); a rerun recomputes the same plan, checks it
against ``repack.plan.json`` (refusing changed inputs or settings) and writes only the shards without a
matching manifest. ``repack.json``, written last, is the collection's manifest: inputs, settings, every
output shard (count, bytes, sha256) and the input shards that could not be read.

    plan = plan_repack(list_shards(IN), RepackConfig(target_size=10**9))
    summary = repack(IN, OUT, RepackConfig())
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..core.config import RepackConfig
from ..core.configbase import ConfigError
from ..core.fsutil import atomic_write_json
from .reader import list_shards
from .schema import KIND_OF_SCHEMA, SCHEMAS
from .writer import TarShard, final_size, manifest_path, member_size, shard_name

log = logging.getLogger(__name__)

PLAN_NAME = "repack.plan.json"
MANIFEST_NAME = "repack.json"


class RepackError(ValueError):
    """The input collection cannot be repacked as asked (mixed kinds, duplicate keys, nothing readable)."""


@dataclass(frozen=True)
class SampleRef:
    """Where one sample's members lie in an input shard: (suffix, data offset, size) in tar order."""

    shard: int  # index into the plan's inputs
    key: str
    members: tuple[tuple[str, int, int], ...]

    @property
    def bytes(self) -> int:
        return sum(member_size(size) for _, _, size in self.members)


@dataclass(frozen=True)
class RepackPlan:
    inputs: list[str]
    skipped: list[dict[str, str]]  # input shards that could not be read: {"shard", "error"}
    schema: str
    outputs: list[list[SampleRef]]  # the samples of each output shard, in order
    cfg: RepackConfig

    def name(self, index: int) -> str:
        return shard_name(self.cfg.prefix, index)

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed repack must find again: the inputs, settings and every output's keys."""
        keys = [hashlib.sha256("\n".join(r.key for r in out).encode()).hexdigest() for out in self.outputs]
        return {
            "inputs": self.inputs,
            "skipped": [s["shard"] for s in self.skipped],
            "schema": self.schema,
            "target_size": self.cfg.target_size,
            "seed": self.cfg.seed,
            "prefix": self.cfg.prefix,
            "outputs": [
                {"shard": self.name(i), "count": len(o), "keys_sha256": k}
                for i, (o, k) in enumerate(zip(self.outputs, keys))
            ],
        }


def index_shard(path: str, index: int) -> tuple[list[SampleRef], str | None]:
    """The samples of one input shard from its tar headers (data is not read), and its schema when its
    manifest names one."""
    refs: list[SampleRef] = []
    groups: dict[str, list[tuple[str, int, int]]] = {}
    file_size = Path(path).stat().st_size
    with tarfile.open(path, mode="r:") as tar:
        for m in tar:
            if not m.isfile():
                continue
            if m.offset_data + m.size > file_size:
                raise tarfile.ReadError(f"member {m.name} is cut off (the shard is truncated)")
            base = m.name.rsplit("/", 1)[-1]
            key, dot, suffix = base.partition(".")
            if not dot or not key:
                raise RepackError(f"{path}: member {m.name!r} is not KEY.SUFFIX")
            if key not in groups:
                groups[key] = []
                refs.append(SampleRef(index, key, ()))
            groups[key].append((suffix, m.offset_data, m.size))
        end = tar.offset  # after the last member: a complete tar has its two zero blocks here
        assert tar.fileobj is not None
        tar.fileobj.seek(end)
        if tar.fileobj.read(2 * tarfile.BLOCKSIZE) != bytes(2 * tarfile.BLOCKSIZE):
            raise tarfile.ReadError(f"no end-of-archive blocks after {end} bytes (the shard is truncated)")
    refs = [SampleRef(r.shard, r.key, tuple(groups[r.key])) for r in refs]
    schema = None
    manifest = manifest_path(path)
    if manifest.is_file():  # the writer's manifest: a shard cut at a member boundary still reads as a tar
        try:
            info = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            info = {}
        schema = info.get("schema")
        if info.get("bytes") not in (None, file_size) or info.get("count") not in (None, len(refs)):
            raise tarfile.ReadError(
                f"{len(refs)} samples in {file_size} bytes, its manifest says {info.get('count')} in "
                f"{info.get('bytes')} (truncated or rewritten)"
            )
    return refs, schema


def _schema_of(path: str, ref: SampleRef) -> str:
    """A sample's schema from its json member (for shards without a manifest)."""
    for suffix, offset, size in ref.members:
        if suffix == "json":
            with open(path, "rb") as f:
                f.seek(offset)
                meta = json.loads(f.read(size))
            return str(meta.get("schema"))
    raise RepackError(f"{path}: sample {ref.key} has no json member (meta)")


def plan_repack(inputs: list[str], cfg: RepackConfig, progress: bool = False) -> RepackPlan:
    """Index every input shard, shuffle all samples with ``cfg.seed``, cut them into ~``cfg.target_size`` shards.

    An input shard that cannot be read is left out (logged, listed in ``skipped``); samples of two
    kinds, or one key in two input shards, are a :class:`RepackError` naming the shards.
    """
    cfg.validate()
    inputs = sorted(inputs)
    samples: list[SampleRef] = []
    skipped: list[dict[str, str]] = []
    schemas: dict[str, str] = {}
    where: dict[str, str] = {}
    for i, path in enumerate(tqdm(inputs, desc="repack: index", unit="shard", disable=not progress)):
        try:
            refs, schema = index_shard(path, i)
        except (OSError, tarfile.TarError) as e:
            log.warning("repack: skipping unreadable shard %s: %s", path, e)
            skipped.append({"shard": path, "error": f"{type(e).__name__}: {e}"})
            continue
        if not refs:
            continue
        schema = schema or _schema_of(path, refs[0])
        if schema not in KIND_OF_SCHEMA:
            raise RepackError(f"{path}: schema {schema!r} is not one of {sorted(SCHEMAS.values())}")
        schemas.setdefault(schema, path)
        if len(schemas) > 1:
            a, b = schemas.items()
            raise RepackError(f"cannot repack two kinds together: {a[1]} holds {a[0]}, {b[1]} holds {b[0]}")
        for r in refs:
            if r.key in where:
                raise RepackError(
                    f"sample {r.key} is in both {where[r.key]} and {path}: one copy would be lost"
                )
            where[r.key] = path
        samples.extend(refs)
    if not samples:
        raise RepackError(f"no readable samples in {len(inputs)} input shards")
    random.Random(cfg.seed).shuffle(samples)
    outputs: list[list[SampleRef]] = [[]]
    size = 0
    for ref in samples:
        if outputs[-1] and final_size(size + ref.bytes) > cfg.target_size:
            outputs.append([])
            size = 0
        outputs[-1].append(ref)
        size += ref.bytes
    return RepackPlan(inputs, skipped, next(iter(schemas)), outputs, cfg)


def _finished(path: Path, keys: list[str]) -> dict[str, Any] | None:
    """The manifest of an output shard already written with exactly these keys, else None."""
    manifest = manifest_path(path)
    if not (path.is_file() and manifest.is_file()):
        return None
    try:
        info = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if info.get("keys") != keys or info.get("bytes") != path.stat().st_size:
        return None
    return info


def repack(
    source: str | Path, out_dir: str | Path, cfg: RepackConfig | None = None, progress: bool = True
) -> dict[str, Any]:
    """Repack the shards of ``source`` into ``out_dir`` (see the module docstring); returns ``repack.json``'s content."""
    cfg = cfg or RepackConfig()
    out_dir = Path(out_dir)
    inputs = [str(Path(u).resolve()) for u in list_shards(source)]
    if any(Path(u).parent == out_dir.resolve() for u in inputs):
        raise ConfigError(f"--out {out_dir} is the input folder: repack into another folder")
    plan = plan_repack(inputs, cfg, progress=progress)
    plan_path = out_dir / PLAN_NAME
    fingerprint = plan.fingerprint()
    if plan_path.is_file():
        saved = json.loads(plan_path.read_text())
        if saved != fingerprint:
            changed = sorted(k for k in fingerprint if saved.get(k) != fingerprint[k])
            raise ConfigError(
                f"{out_dir} holds a repack of other inputs or settings (differs in: {', '.join(changed)}): "
                "repack into another folder, or rerun with the same inputs and settings"
            )
    else:
        atomic_write_json(plan_path, fingerprint)
    written = reused = 0
    shards_out: list[dict[str, Any]] = []
    total = sum(len(o) for o in plan.outputs)
    bar = tqdm(total=total, desc="repack: write", unit="sample", disable=not progress)
    handles: dict[int, Any] = {}
    try:
        for i, refs in enumerate(plan.outputs):
            path = out_dir / plan.name(i)
            keys = [r.key for r in refs]
            info = _finished(path, keys)
            if info is None:
                shard = TarShard(path, plan.schema)
                try:
                    for ref in refs:
                        f = handles.get(ref.shard)
                        if f is None:
                            f = handles[ref.shard] = open(plan.inputs[ref.shard], "rb")  # noqa: SIM115
                        members = []
                        for suffix, offset, size in ref.members:
                            f.seek(offset)
                            data = f.read(size)
                            if len(data) != size:
                                raise RepackError(f"{plan.inputs[ref.shard]}: sample {ref.key} is truncated")
                            members.append((suffix, data))
                        shard.add(ref.key, members)
                except BaseException:
                    shard.abort()
                    raise
                info = shard.finish().manifest()
                written += 1
            else:
                reused += 1
            shards_out.append({k: info[k] for k in ("shard", "count", "bytes", "sha256")})
            bar.update(len(refs))
    finally:
        bar.close()
        for f in handles.values():
            f.close()
    summary = {
        "schema": plan.schema,
        "inputs": plan.inputs,
        "skipped": plan.skipped,
        "seed": cfg.seed,
        "target_size": cfg.target_size,
        "samples": total,
        "shards": shards_out,
    }
    atomic_write_json(out_dir / MANIFEST_NAME, summary)
    log.info(
        "repacked %d samples into %d shards (%d written now, %d already done)",
        total,
        len(shards_out),
        written,
        reused,
    )
    return summary


def parse_size(text: str) -> int:
    """``1GB``, ``512MB``, ``1.5G``, ``300k``, ``1GiB`` or a plain number of bytes -> bytes."""
    units = {
        "": 1,
        "k": 10**3,
        "m": 10**6,
        "g": 10**9,
        "t": 10**12,
        "ki": 2**10,
        "mi": 2**20,
        "gi": 2**30,
        "ti": 2**40,
    }
    t = text.strip().lower().removesuffix("b")
    num = t.rstrip("kmgti")
    unit = t[len(num) :]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in units or value <= 0:
        raise ValueError(f"size {text!r}: expected a number of bytes like 1GB, 512MB, 1.5G or 1000000")
    return int(value * units[unit])
