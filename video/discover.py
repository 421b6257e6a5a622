"""Find the videos to process: a folder (recursive), a glob, or a .txt list of paths."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from .errors import VideoNotFoundError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
FRAME_NAME = re.compile(r"^frame_(\d+)\.(?:jpg|jpeg)$", re.IGNORECASE)
GLOB_CHARS = re.compile(r"[*?\[]")


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def is_frame_folder(path: Path) -> bool:
    try:
        with os.scandir(path) as entries:
            return any(FRAME_NAME.match(e.name) for e in entries)
    except OSError:
        return False


def discover_videos(arg: str | Path) -> list[tuple[str, Path]]:
    """Sorted ``(video_id, path)`` pairs; ``video_id`` is the path relative to the input root (posix).

    ``arg`` is a folder (searched recursively for video files by extension and for folders holding
    ``frame_*.jpg``), a glob (root: the part before the first wildcard), a ``.txt`` file with one path
    per line (``#`` comments; relative paths are relative to the list file; root: the list's folder),
    or a single video file or frame folder.
    """
    text = str(arg)
    path = Path(text)
    if GLOB_CHARS.search(text) and not path.exists():
        return _from_glob(text)
    if path.is_dir():
        if is_frame_folder(path):
            return [(path.name, path)]
        return _from_folder(path)
    if path.suffix.lower() == ".txt" and path.is_file():
        return _from_list(path)
    if path.is_file():
        return [(path.name, path)]
    raise VideoNotFoundError(path, "no such video file, folder, glob match or list file")


def _from_folder(root: Path) -> list[tuple[str, Path]]:
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if here != root and any(FRAME_NAME.match(n) for n in filenames):
            found[here.relative_to(root).as_posix()] = here
        for name in filenames:
            file = here / name
            if is_video_file(file):
                found[file.relative_to(root).as_posix()] = file
    return sorted(found.items())


def _from_glob(pattern: str) -> list[tuple[str, Path]]:
    prefix = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    root = Path(prefix) if prefix.endswith(os.sep) else Path(prefix).parent
    found: dict[str, Path] = {}
    for match in glob.glob(pattern, recursive=True):
        path = Path(match)
        if (path.is_file() and is_video_file(path)) or (path.is_dir() and is_frame_folder(path)):
            found[_relative_id(path, root)] = path
    return sorted(found.items())


def _from_list(list_file: Path) -> list[tuple[str, Path]]:
    root = list_file.parent
    found: dict[str, Path] = {}
    for line in list_file.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        path = Path(entry) if Path(entry).is_absolute() else root / entry
        found[_relative_id(path, root)] = path  # missing entries stay: opening them raises per video
    return sorted(found.items())


def _relative_id(path: Path, root: Path) -> str:
    absolute = Path(os.path.abspath(path))
    base = Path(os.path.abspath(root))
    try:
        return absolute.relative_to(base).as_posix()
    except ValueError:
        return absolute.as_posix().lstrip("/")
