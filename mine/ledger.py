"""The per-video ledger of a mining output, and what makes a run resumable.

Layout of a mining output ``OUT`` (a local folder or an object-store prefix such as ``s3://b/clips``)::

    config.yaml             the resolved recipe (a resumed run must match it)
    ledger.jsonl            one line per finished video: ok / failed / skipped (the last line of a video wins)
    ledger.d/<stem>.json    (object stores only) the line of one video finished since the last compaction
    .ledger.index           (local folders only) a cache of the parsed ledger, so that a resume over a
                            million videos parses only the lines appended since it was written
    shards/<stem>-NNNNNN.tar (+ .tar.json)   clip shards, named from the video (stem = hash of its id)
    parts/<stem>.jsonl      the manifest rows of one video
    parts/<stem>.frames.jsonl   every sampled frame of it: source index, pts, detected hands (an audit
                            trail: the rule can be re-checked or re-run without detecting again)
    .staging/<stem>/        (local folders only) shards of the video being mined, moved into shards/ when
                            it is complete
    manifest.jsonl          one row per clip, rebuilt from the parts of the ``ok`` videos after a run that
                            changed the ledger (``manifest.state.json`` says which ledger state it is of)
    summary.json            totals over the ledger

A video counts as done only once its ledger line is stored, and that line is written only after its shards
and manifest part are in place. So a run killed at any moment leaves, for unfinished videos, at most
staging files, some shards and a part that no ledger line claims: :func:`clean_unclaimed` removes exactly
those before the restart redoes the videos, which then produce the same names again.

Local folders keep the fsync'd append-only ``ledger.jsonl``. Object stores cannot append, and an object
appears whole once written: each finished video's line is its own small object ``ledger.d/<stem>.json``
(a later one for the same video replaces it: last wins), and :meth:`Ledger.compact` folds them into
``ledger.jsonl`` at the start and end of a run: the old lines plus the new ones uploaded as one object,
then the folded objects deleted. Killed between the two steps, the next run reads those lines twice,
which changes nothing (the same record applied again), and folds them again.

The miners of an object-store output stage each video in a node-local temporary folder and upload its
shards (each ``.tar`` before its ``.tar.json``), then its frames log and manifest part; the driver then
writes the ledger line. Nothing is written to a shared local path.

A ledger of a million videos is held compactly: per video a few numbers in arrays (status, counts,
duration, a hash of its input fingerprint, shard count), not a record object.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..core import storage
from ..core.fsutil import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    fsync_dir,
    jsonl_records,
    read_jsonl,
)

Status = Literal["ok", "failed", "skipped"]
LEDGER = "ledger.jsonl"
LEDGER_ENTRIES = "ledger.d"
MANIFEST = "manifest.jsonl"
MANIFEST_STATE = "manifest.state.json"
SUMMARY = "summary.json"
SHARDS = "shards"
PARTS = "parts"
STAGING = ".staging"
_STATUSES: tuple[Status, ...] = ("ok", "failed", "skipped")
_CODE = {s: i for i, s in enumerate(_STATUSES)}
# Above this many videos to redo, one listing of shards/ and parts/ is cheaper than probing each video's names.
PROBE_LIMIT = 2000
# A local ledger's parsed state is cached in OUT/.ledger.index once a start parsed this many lines: the next
# start reads the arrays back and parses only the lines appended since.
INDEX = ".ledger.index"
INDEX_VERSION = 1
INDEX_AFTER_LINES = 10_000
_INDEXED = (("fp", "q"), ("frames", "q"), ("clips", "q"), ("duration", "d"), ("nshards", "l"), ("node", "l"))


def video_stem(video_id: str) -> str:
    """File-name stem for a video's shards and clip keys: stable, short, no dots (webdataset keys)."""
    return hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:16]


def fingerprint(path: str | Path) -> dict[str, int]:
    """Size and mtime of an input: a changed file is mined again on resume."""
    st = os.stat(path)  # one system call per input: a resume checks every one of them
    if stat.S_ISDIR(st.st_mode):
        files = sorted(f for f in Path(path).iterdir() if f.is_file())
        return {"size": sum(f.stat().st_size for f in files), "files": len(files)}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


_FP_KINDS: dict[tuple[str, ...], int] = {("mtime_ns", "size"): 1, ("files", "size"): 2}


def _fp_hash(fp: Mapping[str, Any] | None) -> int:
    """A 64-bit stand-in for a fingerprint (0: none), the same in every process (it is saved in the index).

    The usual fingerprints hold ints only: a tuple of ints hashes the same in every process (strings do
    not: their hash is salted per process), so those stay cheap; any other one is hashed with blake2b.
    """
    if not fp:
        return 0
    items = sorted(fp.items())
    kind = _FP_KINDS.get(tuple(k for k, _ in items))
    if kind is not None and all(type(v) is int for _, v in items):
        return hash((kind, *(v for _, v in items))) or 1
    digest = hashlib.blake2b(json.dumps(items, sort_keys=True).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


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
    fingerprint: dict[str, Any] = field(default_factory=dict)
    finished_at: float = field(default_factory=time.time)
    node: dict[str, str] = field(default_factory=dict)  # where it was mined: Ray node id and host name

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = storage.redact(self.path)  # a signed URL's keys never reach the ledger
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoRecord:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


def _drop_torn_tail(path: Path) -> None:
    """Cut an unterminated last line (a crash mid-append), so that the next append starts a line."""
    if not path.exists():
        return
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # find the last newline, reading backwards in blocks (the file may be hundreds of MB)
        pos, cut = size, 0
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            i = block.rfind(b"\n")
            if i >= 0:
                cut = pos + i + 1
                break
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())


def _regular_shards(video_id: str, shards: list[str]) -> bool:
    """Are the names ``<stem>-000000.tar``, ``<stem>-000001.tar``, ... (then a count stands for them)?"""
    if not shards:
        return True
    stem = video_stem(video_id)
    if len(shards) == 1:
        return shards[0] == stem + "-000000.tar"
    return shards == [f"{stem}-{k:06d}.tar" for k in range(len(shards))]


class _RecordView(Mapping[str, VideoRecord]):
    """``ledger.records``: the state of every video as :class:`VideoRecord`, made on access."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def __getitem__(self, video_id: str) -> VideoRecord:
        rec = self._ledger.get(video_id)
        if rec is None:
            raise KeyError(video_id)
        return rec

    def __iter__(self) -> Iterator[str]:
        return iter(self._ledger._row)

    def __len__(self) -> int:
        return len(self._ledger._row)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._ledger._row


class Ledger:
    """The state of every video of a mining output (last record wins), held compactly.

    Local: an append-only JSON-lines file, one fsync'd line per record. Object store: see the module doc.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out = str(out_dir)
        self.remote = storage.is_url(self.out)
        self.out_dir = Path(out_dir) if not self.remote else None
        self.path = storage.join(self.out, LEDGER)
        self._row: dict[str, int] = {}
        self._status = bytearray()
        self._fp = array("q")
        self._frames = array("q")
        self._clips = array("q")
        self._duration = array("d")
        self._nshards = array("l")  # shard count when the names are <stem>-000000.tar, ...; -1: see _odd
        self._node = array("l")  # index into _nodes; -1: none
        self._nodes: list[tuple[str, str]] = []
        self._node_index: dict[tuple[str, str], int] = {}
        self._reasons: dict[str, str] = {}
        self._odd: dict[str, list[str]] = {}
        self._entries: list[str] = []  # object store: entry objects not yet compacted
        self.appended = 0
        self.records = _RecordView(self)
        if self.remote:
            self._load_remote()
        else:
            self._load_local()

    # -- local: the append-only file, and an index of it -----------------------------------------------

    def _load_local(self) -> None:
        """Read ``ledger.jsonl``; the lines that ``.ledger.index`` already holds are not parsed again."""
        path = Path(self.path)
        _drop_torn_tail(path)
        if not path.exists():
            return
        offset = self._read_index(path)
        parsed = 0
        with open(path, "rb") as f:
            f.seek(offset)
            for d in jsonl_records(f, self.path):
                self._set(d)
                parsed += 1
            size = f.tell()
        if parsed >= INDEX_AFTER_LINES:
            self._write_index(path, size)

    def _index_path(self) -> Path:
        return Path(self.out) / INDEX

    def _read_index(self, ledger: Path) -> int:
        """Load the index when it describes a prefix of ``ledger`` (same bytes at its end); its size, else 0."""
        try:
            with open(self._index_path(), "rb") as f:
                header = json.loads(f.readline())
                if header.get("version") != INDEX_VERSION:
                    return 0
                size, tail = int(header["bytes"]), bytes.fromhex(header["tail"])
                with open(ledger, "rb") as g:
                    g.seek(max(0, size - len(tail)))
                    if ledger.stat().st_size < size or g.read(len(tail)) != tail:
                        return 0  # the ledger was replaced or cut: the index is of another file
                sections = {name: f.read(n) for name, n in header["sections"]}
        except (OSError, ValueError, KeyError, TypeError):
            return 0
        ids = sections["ids"].decode("utf-8").split("\n") if sections["ids"] else []
        arrays: dict[str, Any] = {name: array(code) for name, code in _INDEXED}
        for name, a in arrays.items():
            a.frombytes(sections[name])
            if len(a) != len(ids):
                return 0
        self._row = {v: i for i, v in enumerate(ids)}
        self._status = bytearray(sections["status"])
        if len(self._row) != len(ids) or len(self._status) != len(ids):
            return 0
        self._fp, self._frames, self._clips = arrays["fp"], arrays["frames"], arrays["clips"]
        self._duration, self._nshards, self._node = arrays["duration"], arrays["nshards"], arrays["node"]
        self._nodes = [(str(n[0]), str(n[1])) for n in header["nodes"]]
        self._node_index = {n: k for k, n in enumerate(self._nodes)}
        self._reasons = dict(header["reasons"])
        self._odd = dict(header["odd"])
        return size

    def _write_index(self, ledger: Path, size: int) -> None:
        """Save the in-memory state as ``.ledger.index`` for the ledger's first ``size`` bytes."""
        ids = list(self._row)
        if any("\n" in v for v in ids):
            return
        with open(ledger, "rb") as g:
            g.seek(max(0, size - 64))
            tail = g.read(min(size, 64))
        sections = [
            ("ids", "\n".join(ids).encode("utf-8")),
            ("status", bytes(self._status)),
            *((name, getattr(self, f"_{name}").tobytes()) for name, _ in _INDEXED),
        ]
        header = {
            "version": INDEX_VERSION,
            "bytes": size,
            "tail": tail.hex(),
            "sections": [(name, len(data)) for name, data in sections],
            "nodes": self._nodes,
            "reasons": self._reasons,
            "odd": self._odd,
        }
        body = json.dumps(header).encode("utf-8") + b"\n" + b"".join(data for _, data in sections)
        with contextlib.suppress(OSError):  # only a cache: without it the next start parses the whole ledger
            atomic_write_bytes(self._index_path(), body)

    # -- state ---------------------------------------------------------------------------------------

    def _set(self, d: dict[str, Any]) -> None:
        video_id = d["video_id"]
        i = self._row.get(video_id)
        if i is None:
            i = self._row[video_id] = len(self._status)
            self._status.append(0)
            for a in (self._fp, self._frames, self._clips, self._nshards, self._node):
                a.append(0)
            self._duration.append(0.0)
        status = d.get("status", "failed")
        self._status[i] = _CODE[status]
        self._fp[i] = _fp_hash(d.get("fingerprint"))
        self._frames[i] = int(d.get("frames", 0))
        self._clips[i] = int(d.get("clips", 0))
        self._duration[i] = float(d.get("duration", 0.0))
        shards = d.get("shards") or []
        if self._odd:
            self._odd.pop(video_id, None)
        if _regular_shards(video_id, shards):
            self._nshards[i] = len(shards)
        else:
            self._nshards[i] = -1
            self._odd[video_id] = list(shards)
        node = d.get("node") or {}
        if node:
            key = (str(node.get("host", "")), str(node.get("node_id", "")))
            k = self._node_index.get(key)
            if k is None:
                k = self._node_index[key] = len(self._nodes)
                self._nodes.append(key)
            self._node[i] = k
        else:
            self._node[i] = -1
        reason = d.get("reason") or ""
        if reason:
            self._reasons[video_id] = reason
        else:
            self._reasons.pop(video_id, None)

    def get(self, video_id: str) -> VideoRecord | None:
        """The state of one video (``path``, ``fingerprint``, ``seconds`` and ``finished_at`` not kept)."""
        i = self._row.get(video_id)
        if i is None:
            return None
        node: dict[str, str] = {}
        if self._node[i] >= 0:
            host, node_id = self._nodes[self._node[i]]
            node = {k: v for k, v in (("host", host), ("node_id", node_id)) if v}
        return VideoRecord(
            video_id,
            "",
            _STATUSES[self._status[i]],
            self._reasons.get(video_id, ""),
            frames=self._frames[i],
            clips=self._clips[i],
            duration=self._duration[i],
            shards=self.shards_of(video_id),
            node=node,
            finished_at=0.0,
        )

    def status(self, video_id: str) -> Status | None:
        i = self._row.get(video_id)
        return None if i is None else _STATUSES[self._status[i]]

    def shards_of(self, video_id: str) -> list[str]:
        i = self._row[video_id]
        if self._nshards[i] < 0:
            return list(self._odd[video_id])
        stem = video_stem(video_id)
        return [f"{stem}-{k:06d}.tar" for k in range(self._nshards[i])]

    def __len__(self) -> int:
        return len(self._row)

    def append(self, rec: VideoRecord) -> None:
        d = rec.to_dict()
        if self.remote:
            name = storage.join(self.out, LEDGER_ENTRIES, f"{video_stem(rec.video_id)}.json")
            storage.put_bytes(name, (json.dumps(d, sort_keys=True) + "\n").encode("utf-8"))
            if name not in self._entries:
                self._entries.append(name)
        else:
            append_jsonl(self.path, d)
        self._set(d)
        self.appended += 1

    def is_done(self, video_id: str, fp: dict[str, Any] | None, retry_failed: bool) -> bool:
        i = self._row.get(video_id)
        if i is None:
            return False
        if retry_failed and self._status[i] == _CODE["failed"]:
            return False
        return fp is None or self._fp[i] == 0 or self._fp[i] == _fp_hash(fp)

    def claimed_shards(self) -> set[str]:
        return {name for v in self.ok_ids() for name in self.shards_of(v)}

    def ok_ids(self) -> Iterator[str]:
        ok = _CODE["ok"]
        status = self._status
        return (v for v, i in self._row.items() if status[i] == ok)

    def ok_stems(self) -> set[str]:
        return {video_stem(v) for v in self.ok_ids()}

    def totals(self, video_ids: Iterable[str]) -> dict[str, Any]:
        """Counts over ``video_ids`` (those in the ledger), for :func:`summarize`."""
        by_status = [0, 0, 0]
        frames = clips = 0
        duration = 0.0
        failed: dict[str, str] = {}
        per_node = [0] * len(self._nodes)
        n = 0
        for v in video_ids:
            i = self._row.get(v)
            if i is None:
                continue
            n += 1
            s = self._status[i]
            by_status[s] += 1
            frames += self._frames[i]
            clips += self._clips[i]
            duration += self._duration[i]
            if s == _CODE["failed"]:
                failed[v] = self._reasons.get(v, "")
            if self._node[i] >= 0:
                per_node[self._node[i]] += 1
        nodes = {f"{h}/{nid}": c for (h, nid), c in zip(self._nodes, per_node) if c}
        return {
            "videos": n,
            "by_status": dict(zip(_STATUSES, by_status)),
            "frames": frames,
            "clips": clips,
            "duration": duration,
            "failed": failed,
            "videos_per_node": dict(sorted(nodes.items())),
        }

    # -- object stores -------------------------------------------------------------------------------

    def _load_remote(self) -> None:
        try:
            with storage.open_input(self.path, "rb", block_size=8 << 20) as f:
                for d in jsonl_records(f, self.path):
                    self._set(d)
        except storage.ObjectNotFoundError:
            pass
        self._entries = [
            u for u in storage.listdir(storage.join(self.out, LEDGER_ENTRIES)) if u.endswith(".json")
        ]
        found = storage.read_many(self._entries)
        records: list[dict[str, Any]] = []
        for url in self._entries:
            if url in found:  # (deleted meanwhile by a compaction: its line is in ledger.jsonl)
                records.extend(jsonl_records(io.BytesIO(found[url]), url))
        for d in sorted(records, key=lambda d: (d.get("finished_at", 0.0), d["video_id"])):
            self._set(d)

    def compact(self) -> int:
        """Object store: fold the entry objects into ``ledger.jsonl`` (see the module doc); returns how many."""
        if not self.remote or not self._entries:
            return 0
        found = storage.read_many(self._entries)
        lines: list[dict[str, Any]] = []
        for url in self._entries:
            if url in found:
                lines.extend(jsonl_records(io.BytesIO(found[url]), url))
        lines.sort(key=lambda d: (d.get("finished_at", 0.0), d["video_id"]))
        with tempfile.TemporaryDirectory(prefix="maskahand-ledger-") as tmp:
            local = Path(tmp) / LEDGER
            try:
                storage.download_file(self.path, local)
            except storage.ObjectNotFoundError:
                local.write_bytes(b"")
            data = local.read_bytes()[-1:] if local.stat().st_size else b""
            with open(local, "ab") as f:
                if data and data != b"\n":  # never glue a record onto an unterminated line
                    f.write(b"\n")
                for d in lines:
                    f.write((json.dumps(d, sort_keys=True) + "\n").encode("utf-8"))
            storage.upload_file(local, self.path)
        storage.remove(self._entries)
        n = len(self._entries)
        self._entries = []
        return n

    def state(self) -> dict[str, Any]:
        """What changes whenever a record is added: the ledger's size and version (and open entries)."""
        try:
            st = storage.info(self.path)
        except (FileNotFoundError, storage.ObjectNotFoundError):
            st = {"size": 0}
        if self.remote:
            st["entries"] = sorted(storage.name_of(u) for u in self._entries)
        st["videos"] = len(self._row)
        return st


# -- the files of a video ------------------------------------------------------------------------------


def video_outputs(out_dir: str | Path, stem: str) -> list[str]:
    """Every published file of the video ``stem`` that exists: its shards (+ manifests) and parts."""
    out = str(out_dir)
    if storage.is_url(out):
        names = storage.glob(storage.join(out, SHARDS, f"{stem}-*"))
        names += storage.glob(storage.join(out, PARTS, f"{stem}.*"))
        return sorted(names)
    found = []
    k = 0
    while True:  # shards are published in order from 000000: probe until a gap
        tar = Path(out, SHARDS, f"{stem}-{k:06d}.tar")
        here = [p for p in (tar, tar.with_name(tar.name + ".json")) if p.exists()]
        if not here:
            break
        found += [str(p) for p in here]
        k += 1
    found += [
        str(p)
        for p in (Path(out, PARTS, f"{stem}.jsonl"), Path(out, PARTS, frames_log_name(stem)))
        if p.exists()
    ]
    return found


def clean_unclaimed(
    out_dir: str | Path, ledger: Ledger, redo: Iterable[str] = (), only_redo: bool = False
) -> list[str]:
    """Remove staging files, and shards and manifest parts that no ``ok`` ledger line claims or that
    belong to the video stems in ``redo`` (about to be mined again).

    ``only_redo``: the caller redoes every video of its input that has no ``ok`` line, so only the videos
    in ``redo`` can have stale files. With few of them their names are probed one by one (a resume over a
    million finished videos lists nothing); with many (or without ``only_redo``), ``shards/`` and
    ``parts/`` are listed once and every unclaimed file goes.
    """
    out = str(out_dir)
    redo = set(redo)
    removed: list[str] = []
    if not storage.is_url(out):
        staging = Path(out) / STAGING
        if staging.exists():
            if any(staging.iterdir()):
                removed.append(str(staging))
            shutil.rmtree(staging)
    if only_redo and len(redo) <= PROBE_LIMIT:
        stale = [f for stem in sorted(redo) for f in video_outputs(out, stem)]
    else:
        stale = _unclaimed_listed(out, ledger, redo)
    storage.remove(stale)
    return removed + stale


def _unclaimed_listed(out: str, ledger: Ledger, redo: set[str]) -> list[str]:
    stale = []
    claimed = ledger.claimed_shards()
    for f in storage.listdir(storage.join(out, SHARDS)):
        name = storage.name_of(f)
        shard = name[: -len(".json")] if name.endswith(".tar.json") else name
        if shard not in claimed or shard.split("-")[0] in redo:
            stale.append(f)
    ok = ledger.ok_stems() - redo
    for f in storage.listdir(storage.join(out, PARTS)):
        name = storage.name_of(f)
        if name.split(".")[0] not in ok or not name.endswith(".jsonl"):
            stale.append(f)
    return stale


def part_text(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def publish_video(out_dir: str | Path, stem: str, rows: list[dict[str, Any]]) -> list[str]:
    """Move a finished video's staged shards into ``shards/`` and write its manifest part (local folders).

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
    # The part is written in the staging folder and moved last: a kill leaves no temporary file in parts/
    # (a resume cleans only the names of the videos it redoes, never lists parts/).
    staging.mkdir(parents=True, exist_ok=True)
    part = staging / f"{stem}.jsonl.part"
    with open(part, "w", encoding="utf-8") as handle:
        handle.write(part_text(rows))
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(dest)
    os.replace(part, out / PARTS / f"{stem}.jsonl")
    fsync_dir(out / PARTS)
    shutil.rmtree(staging)
    return sorted(names)


def upload_video(staging: str | Path, out_dir: str, stem: str, rows: list[dict[str, Any]]) -> list[str]:
    """Upload a finished video from its local staging folder to an object-store output.

    Each shard goes up under its final name before its manifest, then the frames log, then the manifest
    part; an object is visible only once whole, so a reader never sees half a shard. Returns the shard
    names. The caller writes the ledger line after this returns.
    """
    staging = Path(staging)
    files = sorted(staging.iterdir()) if staging.is_dir() else []
    names = []
    for f in files:
        if f.name.endswith(".tar"):
            storage.upload_file(f, storage.join(out_dir, SHARDS, f.name))
            names.append(f.name)
            m = f.with_name(f.name + ".json")
            if m.exists():
                storage.upload_file(m, storage.join(out_dir, SHARDS, m.name))
    log_file = staging / frames_log_name(stem)
    if log_file.exists():
        storage.upload_file(log_file, storage.join(out_dir, PARTS, log_file.name))
    storage.put_bytes(storage.join(out_dir, PARTS, f"{stem}.jsonl"), part_text(rows).encode("utf-8"))
    return sorted(names)


def error_reason(err: BaseException) -> str:
    """How a video's failure is recorded: the error's type and last line (a Ray error: its cause's)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        err = cause
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"[:500]


def frames_log_name(stem: str) -> str:
    return f"{stem}.frames.jsonl"


def discard_video(out_dir: str | Path, stem: str) -> None:
    """Drop whatever a failed video staged (local) or uploaded before failing (object store)."""
    if storage.is_url(str(out_dir)):
        storage.remove(video_outputs(out_dir, stem))
        return
    staging = Path(out_dir) / STAGING / stem
    if staging.exists():
        shutil.rmtree(staging)


def rebuild_manifest(out_dir: str | Path, ledger: Ledger) -> int:
    """``manifest.jsonl`` from the parts of ``ok`` videos, sorted by (video id, first frame). Returns rows.

    Skipped when ``manifest.state.json`` says the manifest was built from the ledger as it is now.
    """
    out = str(out_dir)
    state = ledger.state()
    state_file = storage.join(out, MANIFEST_STATE)
    try:
        saved = json.loads(storage.read_bytes(state_file))
        if saved.get("ledger") == state and storage.exists(storage.join(out, MANIFEST)):
            return int(saved["rows"])
    except (FileNotFoundError, storage.ObjectNotFoundError, ValueError, KeyError, TypeError):
        pass
    stems = sorted(video_stem(v) for v in ledger.ok_ids())
    rows: list[dict[str, Any]] = []
    if storage.is_url(out):
        urls = [storage.join(out, PARTS, f"{s}.jsonl") for s in stems]
        found = storage.read_many(urls)
        for url in urls:
            if url in found:
                rows.extend(jsonl_records(io.BytesIO(found[url]), url))
    else:
        for s in stems:
            rows.extend(read_jsonl(Path(out, PARTS, f"{s}.jsonl")))
    rows.sort(key=lambda r: (r["video_id"], r["start"]))
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    if storage.is_url(out):
        storage.put_bytes(storage.join(out, MANIFEST), text.encode("utf-8"))
    else:
        atomic_write_text(Path(out, MANIFEST), text)
    body = json.dumps({"ledger": state, "rows": len(rows)}, sort_keys=True).encode("utf-8")
    storage.put_bytes(state_file, body)
    return len(rows)


def summarize(ledger: Ledger, video_ids: Iterable[str], wall_seconds: float, frames_this_run: int) -> dict:
    """Totals over the videos of this input (ledger state after the run)."""
    t = ledger.totals(video_ids)
    return {
        "videos": t["videos"],
        **{f"videos_{k}": v for k, v in t["by_status"].items()},
        "frames": t["frames"],
        "clips": t["clips"],
        "hours_of_video": t["duration"] / 3600.0,
        "frames_this_run": frames_this_run,
        "wall_seconds_this_run": wall_seconds,
        "frames_per_second_this_run": frames_this_run / wall_seconds if wall_seconds > 0 else 0.0,
        "failed": t["failed"],
        "videos_per_node": t["videos_per_node"],
    }


def write_summary(out_dir: str | Path, summary: dict) -> None:
    if storage.is_url(str(out_dir)):
        text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
        storage.put_bytes(storage.join(str(out_dir), SUMMARY), text.encode("utf-8"))
        return
    atomic_write_json(Path(out_dir) / SUMMARY, summary)
