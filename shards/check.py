"""``shards check``: verify finished shards end to end.

Per shard: the tar reads to its end, the manifest exists and its sha256, bytes, count and keys match
the tar, every sample's members decode and the typed sample passes schema validation. Leftover
``*.partial`` files (a killed writer) and manifests without a shard are reported as warnings: no
reader consumes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tarfile
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..core import storage
from .codec import DecodeError, decode_raw_sample
from .schema import SchemaError, validate_sample
from .writer import MANIFEST_SUFFIX, PARTIAL_SUFFIX, manifest_path


@dataclass
class ShardReport:
    path: Path
    samples: int = 0
    bytes: int = 0
    schemas: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    shards: list[ShardReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    @property
    def problems(self) -> list[str]:
        return [f"{s.path.name}: {p}" for s in self.shards for p in s.problems]

    @property
    def ok(self) -> bool:
        return bool(self.shards) and not self.problems

    def summary(self) -> str:
        schemas = sorted({x for s in self.shards for x in s.schemas})
        lines = [
            f"shards: {len(self.shards)}  samples: {self.samples}  bytes: {self.bytes}  "
            f"schemas: {', '.join(schemas) or '-'}  problems: {len(self.problems)}  warnings: {len(self.warnings)}"
        ]
        lines += [f"PROBLEM {p}" for p in self.problems]
        lines += [f"warning {w}" for w in self.warnings]
        if not self.shards:
            lines.append("PROBLEM no *.tar shards found")
        return "\n".join(lines)


def _split_name(name: str) -> tuple[str, str] | None:
    base = name.rsplit("/", 1)[-1]
    if "." not in base:
        return None
    stem, suffix = base.split(".", 1)
    prefix = name[: len(name) - len(base)]
    return prefix + stem, suffix.lower()


def file_sha256(path: str | Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _check_sample(path: Path, key: str, members: dict[str, bytes], rep: ShardReport) -> None:
    raw = {"__key__": key, "__url__": str(path), **members}
    try:
        sample = decode_raw_sample(raw)
        validate_sample(sample, shard=path.name)
        rep.schemas.add(sample.meta["schema"])
    except (DecodeError, SchemaError) as e:
        rep.problems.append(f"sample {key}: {e}")
    except Exception as e:  # a check must report, never crash, whatever a member holds
        rep.problems.append(f"sample {key}: {type(e).__name__}: {e}")


def check_shard(path: str | Path) -> ShardReport:
    """Check one shard, holding one sample in memory at a time."""
    path = Path(path)
    rep = ShardReport(path, bytes=path.stat().st_size)
    keys: list[str] = []
    current: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if not info.isreg():
                    rep.problems.append(f"member {info.name!r} is not a regular file")
                    continue
                parts = _split_name(info.name)
                if parts is None:
                    rep.problems.append(f"member {info.name!r} has no KEY.SUFFIX name")
                    continue
                key, suffix = parts
                if not keys or key != keys[-1]:
                    if keys:
                        _check_sample(path, keys[-1], current, rep)
                    if key in keys:
                        rep.problems.append(f"sample {key}: its members are not contiguous (key seen before)")
                    keys.append(key)
                    current = {}
                f = tar.extractfile(info)
                current[suffix] = f.read() if f else b""
                tar.members = []  # type: ignore[attr-defined]  # keep memory bounded on large shards
    except (tarfile.TarError, EOFError, OSError) as e:
        rep.problems.append(f"tar is corrupt or truncated ({type(e).__name__}: {e})")
    else:
        if keys:
            _check_sample(path, keys[-1], current, rep)
    rep.samples = len(keys)
    _check_manifest(path, file_sha256(path), keys, rep)
    return rep


def manifest_matches(tar_path: str | Path) -> bool:
    """Cheap completeness test for resuming stages: manifest present, size and sha256 equal the tar's."""
    tar_path = Path(tar_path)
    mpath = manifest_path(tar_path)
    if not tar_path.is_file() or not mpath.is_file():
        return False
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (
        isinstance(manifest, dict)
        and manifest.get("bytes") == tar_path.stat().st_size
        and manifest.get("sha256") == file_sha256(tar_path)
    )


def _check_manifest(path: Path, sha: str, keys: list[str], rep: ShardReport) -> None:
    mpath = manifest_path(path)
    if not mpath.is_file():
        rep.problems.append(f"manifest {mpath.name} is missing")
        return
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        rep.problems.append(f"manifest {mpath.name} is not valid JSON ({e})")
        return
    if not isinstance(manifest, dict):
        rep.problems.append(f"manifest {mpath.name} is not a JSON object")
        return
    if manifest.get("sha256") != sha:
        rep.problems.append("sha256 differs from the manifest (the tar was modified or damaged)")
    if manifest.get("bytes") != rep.bytes:
        rep.problems.append(f"size {rep.bytes} differs from the manifest's {manifest.get('bytes')}")
    if manifest.get("count") != len(keys):
        rep.problems.append(f"{len(keys)} samples read, manifest says {manifest.get('count')}")
    elif manifest.get("keys") != keys:
        rep.problems.append("sample keys differ from the manifest")
    if rep.schemas and {manifest.get("schema")} != rep.schemas:
        rep.problems.append(
            f"manifest schema {manifest.get('schema')!r} but samples are {sorted(rep.schemas)}"
        )


def check_shards(target: str | Path, progress: bool = True, jobs: int = 1) -> CheckReport:
    """Check one ``.tar`` or every ``*.tar`` in a directory (or object-store URL), with ``jobs`` processes."""

    if storage.is_url(str(target)):
        return _check_url_shards(str(target), progress)
    target = Path(target)
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such file or directory")
    report = CheckReport()
    if target.is_dir() and not any(target.glob("*.tar")) and (target / "shards").is_dir():
        target = target / "shards"  # a stage's output folder (mine writes OUT/shards/)
    if target.is_file():
        paths = [target]
    else:
        paths = sorted(target.glob("*.tar"))
        report.warnings += [
            f"{p.name}: unfinished shard from an interrupted writer (no reader consumes it)"
            for p in sorted(target.glob("*" + PARTIAL_SUFFIX))
        ]
        report.warnings += [
            f"{m.name}: manifest without its shard"
            for m in sorted(target.glob("*.tar" + MANIFEST_SUFFIX))
            if not m.with_name(m.name[: -len(MANIFEST_SUFFIX)]).exists()
        ]
    bar = tqdm(total=len(paths), desc="check shards", unit="shard", disable=not progress)
    if jobs <= 1 or len(paths) <= 1:
        for p in paths:
            report.shards.append(check_shard(p))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=min(jobs, len(paths))) as pool:
            for rep in pool.map(check_shard, paths):
                report.shards.append(rep)
                bar.update()
    bar.close()
    return report


def _check_url_shards(url: str, progress: bool) -> CheckReport:
    """Object-store shards: each one (with its manifest) is fetched into a temporary folder and checked
    like a local one (a check reads every byte anyway); only one shard is on local disk at a time."""

    # deferred: webdataset at import
    from .reader import list_shards

    report = CheckReport()
    tars = list_shards(url)
    folders = sorted({storage.parent(t) for t in tars})
    for folder in folders:
        names = set(storage.listdir(folder))
        report.warnings += [
            f"{storage.name_of(m)}: manifest without its shard"
            for m in sorted(names)
            if m.endswith(".tar" + MANIFEST_SUFFIX) and m[: -len(MANIFEST_SUFFIX)] not in names
        ]
    bar = tqdm(total=len(tars), desc="check shards", unit="shard", disable=not progress)
    for tar in tars:
        with tempfile.TemporaryDirectory(prefix="maskahand-check-") as tmp:
            local = Path(tmp) / storage.name_of(tar)
            storage.download_file(tar, local)
            with contextlib.suppress(FileNotFoundError):  # a missing manifest is reported by the check
                storage.download_file(tar + MANIFEST_SUFFIX, manifest_path(local))
            rep = check_shard(local)
        rep.path = Path(storage.name_of(tar))
        report.shards.append(rep)
        bar.update()
    bar.close()
    return report
