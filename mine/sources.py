"""What ``mine --videos`` names, turned into one :class:`VideoTask` per video.

``--videos`` is one argument, any of:

- a local folder (recursive), glob, single video file or EPIC frame folder (as before);
- an fsspec URL prefix, glob or single object: ``s3://``, ``gs://``, ``http(s)://`` (``file://`` is local);
- a manifest ``.txt`` (one path or URL a line) or ``.csv/.tsv/.jsonl/.parquet`` (video2dataset's
  ``url_list``: ``mine.input.url_col``, optional ``key_col`` and ``clips_col``, other columns carried
  into the clips' metadata), read streaming: rows are turned into small tasks batch by batch;
- video WebDataset shards: a ``.tar``, a brace list ``shards/{00000..00099}.tar``, or tars found in a
  folder/prefix. Each ``KEY.mp4|webm|mkv|avi|mov`` member is one video with id ``TARNAME/KEY``; its
  ``KEY.json`` is its metadata. Member headers are indexed at plan time (reads of the headers only);
  the miner decodes the member's byte range from the stream.

Inputs named one by one (manifest rows, tar members) are not asked about at plan time (a million HEAD
requests): the miner takes their fingerprint when it opens them. Listed prefixes carry it for free.
An entry that can never be mined (a row without a URL, a member cut off by the end of its tar, a tar
that cannot be opened) still becomes a task holding its typed error: the miner raises it, the ledger
records the entry as failed, and the run goes on.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import storage
from ..core.cli_util import UnusableInputError
from ..core.config import MineInputConfig
from ..video.discover import VIDEO_EXTENSIONS, discover_videos
from ..video.errors import TruncatedVideoError, VideoError, VideoNotFoundError
from ..video.source import VideoInput
from .ledger import fingerprint as local_fingerprint
from .ledger import video_stem

__all__ = [
    "MANIFEST_EXTENSIONS",
    "ManifestError",
    "ManifestRowError",
    "TarIndexError",
    "VideoTask",
    "discover_inputs",
    "index_tar",
    "iter_inputs",
    "read_manifest_rows",
]

MANIFEST_EXTENSIONS = (".txt", ".csv", ".tsv", ".jsonl", ".parquet")
TAR_EXTENSION = ".tar"
GLOB_CHARS = re.compile(r"[*?\[]")
BRACES = re.compile(r"\{[^{}]*(?:\.\.|,)[^{}]*\}")
#: fsspec block for reading tar headers: one request covers the headers of consecutive small members,
#: and a header after a large member costs one small request (not a block of the video's data)
TAR_INDEX_BLOCK = 64 * 1024
TAR_INDEX_THREADS = 8


class ManifestError(ValueError, UnusableInputError):
    """A manifest that cannot be read at all (not Parquet/CSV/JSON-lines, no URL column): exit 2."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = storage.redact(str(path)), reason
        super().__init__(f"{self.path}: cannot read the manifest: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


class ManifestRowError(VideoError):
    """One manifest row names no usable video (no URL, malformed spans); ``path`` is ``MANIFEST:row N``."""

    kind = "bad manifest row"


class TarIndexError(VideoError):
    """A tar of video WebDataset shards cannot be indexed (not a tar, cut short in a header)."""

    kind = "unreadable tar"


@dataclass(slots=True)
class VideoTask:
    """One video to mine. Small on purpose: a 10-million-row manifest becomes 10 million of these."""

    video_id: str
    source: str | VideoInput  # a local path or URL, or a byte range of a tar
    fingerprint: dict[str, Any] | None  # None: the miner takes it when it opens the video
    spans: tuple[tuple[float, float], ...] | None = None  # manifest clips column: mine only these (s)
    # a manifest row's key and other columns: (column names, (key, *values)); the names tuple is shared
    metadata: tuple[tuple[str, ...], tuple[Any, ...]] | None = None
    problem: BaseException | None = None  # why it cannot be mined; the miner raises it (ledger: failed)

    @property
    def path(self) -> str:
        return self.source.name if isinstance(self.source, VideoInput) else str(self.source)

    @property
    def stem(self) -> str:
        return video_stem(self.video_id)


# --- dispatch -----------------------------------------------------------------------------------------


def discover_inputs(arg: str, cfg: MineInputConfig | None = None) -> list[VideoTask]:
    """The videos ``--videos ARG`` names, sorted by id for folders/globs/lists, in row order for manifests.

    Raises :class:`~maskahand.video.errors.VideoNotFoundError` (nothing there),
    :class:`ManifestError` (a manifest that cannot be read), and the storage errors of the listing
    (:class:`~maskahand.core.storage.BucketNotFoundError`, ...): these stop the run before it starts.
    """
    return list(iter_inputs(arg, cfg))


def iter_inputs(arg: str, cfg: MineInputConfig | None = None) -> Iterator[VideoTask]:
    """:func:`discover_inputs` as an iterator: a manifest's rows become tasks as they are read, so a caller
    that keeps only some (the ones not yet in the ledger) never holds them all."""
    cfg = cfg or MineInputConfig()
    text = str(arg)
    ext = _extension(text)
    one_manifest = (
        ext in MANIFEST_EXTENSIONS and ext != ".txt" and not (BRACES.search(text) or GLOB_CHARS.search(text))
    )
    if one_manifest and (storage.is_url(text) or storage.local_path(text).is_file()):
        return _from_manifest(text, cfg)
    return iter(_discover(text, cfg))


def _discover(text: str, cfg: MineInputConfig) -> list[VideoTask]:
    if BRACES.search(text):
        # deferred: braceexpand at import
        from braceexpand import braceexpand

        return _from_names(list(braceexpand(text)), _pattern_root(text))
    ext = _extension(text)
    if not storage.is_url(text):
        return _from_local(text, ext, cfg)
    if GLOB_CHARS.search(text):
        return _from_names(storage.glob(text), _pattern_root(text))
    if ext in MANIFEST_EXTENSIONS:
        return list(_from_manifest(text, cfg))
    if ext == TAR_EXTENSION:
        return _from_names([text], storage.parent(text))
    if ext in VIDEO_EXTENSIONS:  # one object: one request to say it is there (no listing)
        if not storage.exists(text):
            _check_bucket(text)
            raise VideoNotFoundError(text, "no such object")
        return [VideoTask(storage.name_of(text), text, None)]
    listed = list(storage.walk_files_info(text.rstrip("/")))
    if listed and not (len(listed) == 1 and listed[0][0].rstrip("/") == text.rstrip("/")):
        return _from_listing(listed, text.rstrip("/"))
    if not listed and not storage.exists(text):
        _check_bucket(text)
        raise VideoNotFoundError(text, "no such object or prefix")
    return [VideoTask(storage.name_of(text), text, None)]


def _from_local(text: str, ext: str, cfg: MineInputConfig) -> list[VideoTask]:
    path = storage.local_path(text)
    if ext == ".txt" and path.is_file():  # a list of paths: ids sorted, a path listed twice mined once
        return sorted(
            {t.video_id: t for t in _from_manifest(str(path), cfg)}.values(), key=lambda t: t.video_id
        )
    if ext in MANIFEST_EXTENSIONS and path.is_file():
        return list(_from_manifest(str(path), cfg))
    if ext == TAR_EXTENSION and path.is_file():
        return _from_names([str(path)], str(path.parent))
    tars: list[str] = []
    if path.is_dir():
        tars = sorted(
            os.path.join(d, n) for d, _, files in os.walk(path) for n in files if n.endswith(TAR_EXTENSION)
        )
    elif GLOB_CHARS.search(str(path)) and not path.exists():
        tars = [m for m in storage.glob(str(path)) if m.endswith(TAR_EXTENSION)]
    tasks = _tar_tasks(tars, _pattern_root(str(path)) if not path.is_dir() else str(path)) if tars else []
    try:
        found = discover_videos(path)
    except VideoNotFoundError:
        if tasks:
            return tasks
        raise
    for video_id, video in found:
        tasks.append(VideoTask(video_id, str(video), _stat(video)))
    return sorted(tasks, key=lambda t: t.video_id)


def _stat(path: str | Path) -> dict[str, Any]:
    try:
        return local_fingerprint(path)
    except OSError:
        return {}  # missing: opening it raises VideoNotFoundError for this video


def _from_names(names: list[str], root: str) -> list[VideoTask]:
    """Tars and video files named one by one (a brace list, a glob's matches)."""
    tars = [n for n in names if _extension(n) == TAR_EXTENSION]
    tasks = _tar_tasks(tars, root)
    for name in names:
        if _extension(name) in VIDEO_EXTENSIONS:
            fp = _stat(name) if not storage.is_url(name) else None
            tasks.append(VideoTask(_relative_id(name, root), name, fp))
    if not tasks:
        raise VideoNotFoundError(root, f"no video files or .tar shards among {len(names)} name(s)")
    return sorted(tasks, key=lambda t: t.video_id)


def _from_listing(listed: list[tuple[str, dict[str, Any]]], root: str) -> list[VideoTask]:
    """Objects under a URL prefix, with the versions the listing gave (changed objects are mined again)."""
    tasks = _tar_tasks([u for u, _ in listed if _extension(u) == TAR_EXTENSION], root)
    for url, version in listed:
        name = storage.name_of(url)
        if _extension(url) in VIDEO_EXTENSIONS and not name.startswith("."):
            tasks.append(VideoTask(_relative_id(url, root), url, version))
    return sorted(tasks, key=lambda t: t.video_id)


def _check_bucket(url: str) -> None:
    """Raise BucketNotFoundError when the URL's bucket itself is missing (the run cannot do anything)."""
    if storage.protocol(url) not in ("s3", "gs"):
        return
    bucket = url.split("://", 1)[0] + "://" + url.split("://", 1)[1].split("/", 1)[0]
    if not storage.exists(bucket):
        raise storage.BucketNotFoundError(bucket, "the bucket does not exist")


# --- names --------------------------------------------------------------------------------------------


def _extension(name: str) -> str:
    base = name.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return os.path.splitext(base)[1].lower()


def _pattern_root(pattern: str) -> str:
    """The folder before a glob's or brace list's first wildcard (video ids are relative to it)."""
    prefix = re.split(r"[*?\[{]", pattern, maxsplit=1)[0]
    return prefix.rstrip("/") if prefix.endswith("/") else prefix.rsplit("/", 1)[0]


def _relative_id(name: str, root: str) -> str:
    """``name`` relative to ``root`` (posix), or the name without its scheme when it is not under it."""
    if storage.is_url(name) or storage.is_url(root):
        base = root.rstrip("/") + "/"
        if name.startswith(base):
            return name[len(base) :]
        return name.split("://", 1)[-1].split("?", 1)[0]
    absolute = os.path.abspath(storage.local_path(name))
    base_dir = os.path.abspath(storage.local_path(root))
    rel = os.path.relpath(absolute, base_dir)
    if rel.startswith(".."):
        return Path(absolute).as_posix().lstrip("/")
    return Path(rel).as_posix()


# --- video WebDataset tars ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TarMember:
    name: str
    offset: int  # of its data
    size: int


def index_tar(url: str) -> tuple[list[TarMember], int, str | None]:
    """The regular-file members of a tar (name, data offset, size), the tar's size, and why the index
    stopped early (None: it read to the end). Reads member headers only (seeks over the data)."""

    f, version = storage.open_with_info(url, block_size=TAR_INDEX_BLOCK)
    size = int(version["size"])
    members: list[TarMember] = []
    problem: str | None = None
    with f:
        try:
            with tarfile.open(fileobj=f, mode="r:") as tar:
                for m in tar:
                    if m.isfile():
                        members.append(TarMember(m.name, m.offset_data, m.size))
        except tarfile.TarError as e:
            if not members:
                raise TarIndexError(storage.redact(url), f"not a readable tar ({e})") from e
            problem = f"tar headers unreadable after member {members[-1].name} ({e})"
    return members, size, problem


def _tar_tasks(tars: list[str], root: str) -> list[VideoTask]:
    """One task per video member of each tar, the tars indexed in parallel threads (I/O bound)."""
    if not tars:
        return []
    with ThreadPoolExecutor(max_workers=min(TAR_INDEX_THREADS, len(tars))) as pool:
        results = list(pool.map(_index_or_error, tars))
    tasks: list[VideoTask] = []
    for tar, result in zip(tars, results):
        tar_id = _relative_id(tar, root)
        tar_id = tar_id[: -len(TAR_EXTENSION)] if tar_id.endswith(TAR_EXTENSION) else tar_id
        if isinstance(result, BaseException):
            tasks.append(VideoTask(tar_id, tar, None, problem=result))
            continue
        tasks.extend(_member_tasks(tar, tar_id, *result))
    return tasks


def _index_or_error(tar: str) -> tuple[list[TarMember], int, str | None] | BaseException:
    try:
        return index_tar(tar)
    except storage.BucketNotFoundError:
        raise  # nothing in that bucket can be read: stop the run
    except (storage.StorageError, VideoError, OSError) as e:
        return e if isinstance(e, (storage.StorageError, VideoError)) else storage.classify_error(e, tar)


def _split_member(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the name up to the first dot of its last component."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


def _member_tasks(
    tar: str, tar_id: str, members: list[TarMember], size: int, problem: str | None
) -> Iterator[VideoTask]:
    metas = {}
    videos: list[tuple[str, TarMember]] = []
    for m in members:
        key, ext = _split_member(m.name)
        if ext == "json":
            metas[key] = m
        elif f".{ext}" in VIDEO_EXTENSIONS:
            videos.append((key, m))
    for key, m in videos:
        video_id = f"{tar_id}/{key}"
        meta = metas.get(key)
        source = VideoInput(
            tar,
            m.offset,
            m.size,
            m.name,
            meta.offset if meta else 0,
            meta.size if meta and meta.offset + meta.size <= size else 0,
        )
        cut: BaseException | None = None
        if m.offset + m.size > size:
            problem = None  # the index stopped at this cut: the member's own failure says it
            cut = TruncatedVideoError(
                source.name,
                f"the tar ends at byte {size}, inside this member ({m.size} bytes from byte {m.offset})",
            )
        yield VideoTask(video_id, source, None, problem=cut)
    if problem:
        yield VideoTask(f"{tar_id}/#index", tar, None, problem=TarIndexError(storage.redact(tar), problem))


# --- manifests ----------------------------------------------------------------------------------------


def read_manifest_rows(path: str, batch_rows: int = 65536) -> Iterator[dict[str, Any]]:
    """The rows of a ``.txt/.csv/.tsv/.jsonl/.parquet`` manifest as dicts, streamed batch by batch.

    ``.txt`` rows are ``{"url": line}``. A JSON-lines line that is not an object becomes
    ``{"__error__": why}`` (that row fails; the others are mined). Raises :class:`ManifestError` when
    the file cannot be read as its format at all.
    """
    ext = _extension(path)
    try:
        f = storage.open_input(path, "rb")
    except FileNotFoundError:
        raise
    except storage.StorageError as e:
        raise ManifestError(path, e.reason) from e
    with f:
        if ext == ".parquet":
            yield from _parquet_rows(f, path, batch_rows)
        elif ext in (".csv", ".tsv"):
            yield from _csv_rows(f, path, "\t" if ext == ".tsv" else ",")
        elif ext == ".jsonl":
            yield from _jsonl_rows(f, path)
        else:
            for line in io.TextIOWrapper(f, encoding="utf-8"):
                entry = line.split("#", 1)[0].strip() if not storage.is_url(line.strip()) else line.strip()
                if entry:
                    yield {"url": entry}


def _parquet_rows(f: Any, path: str, batch_rows: int) -> Iterator[dict[str, Any]]:
    # deferred: pyarrow at import
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except (pa.ArrowException, OSError) as e:
        raise ManifestError(path, f"not a Parquet file ({e})") from e
    for batch in pf.iter_batches(batch_size=batch_rows):
        yield from batch.to_pylist()


def _csv_rows(f: Any, path: str, delimiter: str) -> Iterator[dict[str, Any]]:
    text = io.TextIOWrapper(f, encoding="utf-8", newline="")
    try:
        reader = csv.DictReader(text, delimiter=delimiter)
        if not reader.fieldnames:
            raise ManifestError(path, "no header line")
        for row in reader:
            yield {k: v for k, v in row.items() if k is not None}
    except (csv.Error, UnicodeDecodeError) as e:
        raise ManifestError(path, f"not {'TSV' if delimiter == chr(9) else 'CSV'} text ({e})") from e


def _jsonl_rows(f: Any, path: str) -> Iterator[dict[str, Any]]:
    good = bad = 0
    try:
        for n, line in enumerate(io.TextIOWrapper(f, encoding="utf-8")):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                row = {"__error__": f"line {n + 1} is not JSON ({e.msg})"}
            if not isinstance(row, dict):
                row = {"__error__": f"line {n + 1} is not a JSON object"}
            if "__error__" in row:
                bad += 1
                if bad > 100 and good == 0:
                    break
            else:
                good += 1
            yield row
    except UnicodeDecodeError as e:
        raise ManifestError(path, f"not UTF-8 text ({e})") from e
    if bad and not good:
        raise ManifestError(path, f"none of its {bad} first line(s) is a JSON object")


def _from_manifest(path: str, cfg: MineInputConfig) -> Iterator[VideoTask]:
    """One small task per manifest row; the row's other columns ride along as a tuple of values."""
    rows = _ManifestRows(path, cfg)
    for n, row in enumerate(read_manifest_rows(path, cfg.batch_rows)):
        yield rows.task(n, row)


class _ManifestRows:
    """Turns rows into tasks (hot: a million rows per few seconds, so the per-row work is kept lean)."""

    def __init__(self, path: str, cfg: MineInputConfig) -> None:
        self.path, self.cfg = path, cfg
        self.remote_root = storage.is_url(path)
        self.root = storage.parent(path) if self.remote_root else str(storage.local_path(path).parent)
        self.root_prefix = self.root.rstrip("/") + "/"
        self.is_txt = _extension(path) == ".txt"
        self.checked_columns = self.is_txt or _extension(path) == ".jsonl"
        self.named = {cfg.url_col, cfg.key_col, cfg.clips_col}
        self.columns: tuple[str, ...] = ()  # the carried columns' names, one tuple shared by every row

    def problem(self, n: int, key: str, source: str, why: str) -> VideoTask:
        where = f"{storage.redact(self.path)}:row {n}"
        return VideoTask(key or f"row-{n}", source or where, None, problem=ManifestRowError(where, why))

    def task(self, n: int, row: dict[str, Any]) -> VideoTask:
        cfg = self.cfg
        if self.is_txt:
            row = {cfg.url_col: row["url"]}
        elif not self.checked_columns:
            if cfg.url_col not in row:
                raise ManifestError(
                    self.path, f"no column '{cfg.url_col}' (mine.input.url_col); columns: {', '.join(row)}"
                )
            self.checked_columns = True
        key = row.get(cfg.key_col)
        key = str(key).strip() if key is not None else ""
        url = row.get(cfg.url_col)
        url = str(url).strip() if url is not None else ""
        if "__error__" in row:
            return self.problem(n, key, "", row["__error__"])
        if not url:
            return self.problem(n, key, "", f"no URL in column '{cfg.url_col}' (mine.input.url_col)")
        remote = "://" in url and storage.is_url(url)
        if not remote:  # a path: relative to the manifest's folder
            if self.remote_root:
                url = url if url.startswith("/") else self.root_prefix + url
                remote = not url.startswith("/")
            else:  # string operations only: a Path per row costs seconds over a million rows
                if url[:7].lower() == "file://":
                    url = url[7:]
                if not url.startswith("/"):
                    url = os.path.join(self.root, url)
        if key:
            video_id = key
        elif url.startswith(self.root_prefix):
            video_id = url[len(self.root_prefix) :]
        else:
            video_id = _relative_id(url, self.root)
        spans = None
        clips = row.get(cfg.clips_col)
        if clips is not None and clips != "":
            try:
                spans = _parse_spans(clips)
            except ValueError as e:
                return self.problem(n, video_id, url, f"column '{cfg.clips_col}': {e}")
        carry = self.cfg.carry_columns
        columns = tuple(k for k in row if k not in self.named and (carry is None or k in carry))
        if columns != self.columns:
            self.columns = columns
        metadata = (self.columns, (key, *(row[k] for k in columns))) if key or columns else None
        return VideoTask(video_id, url, None if remote else _stat(url), spans, metadata)


def _parse_spans(value: Any) -> tuple[tuple[float, float], ...] | None:
    """``[[start, end], ...]`` in seconds (a list, or its JSON text in CSV); sorted by start."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"not a JSON list of [start, end] pairs ({e.msg})") from e
    if not isinstance(value, Iterable) or isinstance(value, (str, bytes, dict)):
        raise ValueError(f"expected a list of [start, end] pairs, got {value!r:.80}")
    items = list(value)
    if items and isinstance(items[0], (int, float)) and len(items) == 2:
        items = [items]  # one span written as [start, end]
    spans = []
    for item in items:
        pair = list(item) if isinstance(item, Iterable) and not isinstance(item, (str, bytes)) else []
        if len(pair) != 2 or not all(isinstance(v, (int, float)) for v in pair):
            raise ValueError(f"{item!r:.80} is not a [start, end] pair of seconds")
        start, end = float(pair[0]), float(pair[1])
        if not 0 <= start < end:
            raise ValueError(f"span [{start:g}, {end:g}] is empty or negative")
        spans.append((start, end))
    return tuple(sorted(spans)) or None
