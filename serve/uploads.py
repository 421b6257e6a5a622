"""Uploads checked by what they hold, never by their names.

A video must start like MP4/MOV (``ftyp`` box), WebM/Matroska (EBML) or AVI (``RIFF....AVI ``), then open
with :func:`maskahand.video.open_video` (the CLI's reader and its typed :class:`VideoError`\\s) and be at
most ``serve.max_video_seconds`` long. An image must start like JPEG, PNG or WebP and be at most
``serve.max_image_pixels`` (read from its header, before decoding). Files are stored under fixed names in
the request's private folder; the name the browser sent is only shown in messages.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..core.config import ServeConfig, VideoConfig
from ..video.errors import NotAVideoError, VideoError


class UploadError(ValueError):
    """An upload the server refuses; the message names the upload and says what is wrong."""


class ImageUploadError(UploadError):
    pass


class VideoTooLongError(VideoError):
    kind = "too long"


def display_name(name: str | None, fallback: str) -> str:
    """The browser's file name, for messages only: its last part, printable characters, at most 80."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(c for c in base if c.isprintable())[:80].strip()
    return base or fallback


def video_kind(head: bytes) -> str | None:
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm/matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def image_kind(head: bytes) -> str | None:
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def check_video(path: Path, name: str, cfg: ServeConfig, video: VideoConfig) -> float:
    """Duration in seconds of the stored upload ``path``; raises a :class:`VideoError` naming ``name``."""
    # deferred: torch at import
    from ..video import open_video

    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise NotAVideoError(name, "the upload is empty")
    if video_kind(head) is None:
        raise NotAVideoError(name, "its content is not MP4/MOV, WebM/Matroska or AVI")
    try:
        info = open_video(path, video).info
    except VideoError as e:
        raise type(e)(name, e.reason) from None
    if info.duration > cfg.max_video_seconds:
        raise VideoTooLongError(
            name, f"{info.duration:.1f} s; this server takes at most {cfg.max_video_seconds:g} s"
        )
    return info.duration


def check_image(path: Path, name: str, cfg: ServeConfig) -> tuple[int, int]:
    """(width, height) of the stored upload ``path``, read from its header; raises :class:`ImageUploadError`."""
    # deferred: PIL at import
    from PIL import Image, UnidentifiedImageError

    with open(path, "rb") as f:
        head = f.read(16)
    if image_kind(head) is None:
        raise ImageUploadError(f"{name}: not an image: its content is not JPEG, PNG or WebP")
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise ImageUploadError(f"{name}: not a readable image ({e})") from None
    if width * height > cfg.max_image_pixels:
        raise ImageUploadError(
            f"{name}: {width}x{height} pixels; this server takes at most {cfg.max_image_pixels} pixels"
        )
    return width, height
