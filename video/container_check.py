"""Cheap structural checks of a video file's container, before FFmpeg opens it.

FFmpeg reads a cut file without complaint up to where the data stops, or refuses it with a generic
"invalid data" message. Comparing the sizes the container declares with the file's size tells a cut
file (a copy or a recording that stopped) apart from something that is not a video at all.
"""

from __future__ import annotations

from typing import BinaryIO

MP4_TOP_LEVEL = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp", b"moof"}
EBML_MAGIC = b"\x1a\x45\xdf\xa3"
MATROSKA_SEGMENT = b"\x18\x53\x80\x67"


def container_family(head: bytes) -> str | None:
    """'mp4' (ISO BMFF / QuickTime), 'matroska' (mkv, webm), 'avi' or None from the first bytes."""
    if len(head) >= 8 and head[4:8] in MP4_TOP_LEVEL:
        return "mp4"
    if head.startswith(EBML_MAGIC):
        return "matroska"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def stream_truncation_problem(f: BinaryIO, size: int) -> str | None:
    """Why the container in a seekable file object of ``size`` bytes (a file, an object, a tar member)
    looks cut short, or None when its declared sizes fit."""
    f.seek(0)
    head = f.read(16)
    family = container_family(head)
    if family == "mp4":
        return _mp4_problem(f, size)
    if family == "matroska":
        return _matroska_problem(f, size)
    if family == "avi":
        declared = int.from_bytes(head[4:8], "little") + 8
        if declared > size:
            return f"RIFF header declares {declared} bytes but the file has {size}"
    return None


def _mp4_problem(f: BinaryIO, size: int) -> str | None:
    offset = 0
    seen: set[bytes] = set()
    while offset + 8 <= size:
        f.seek(offset)
        header = f.read(16)
        box_size = int.from_bytes(header[:4], "big")
        box_type = header[4:8]
        if box_size == 1:  # 64-bit size follows the type
            box_size = int.from_bytes(header[8:16], "big")
        elif box_size == 0:  # box runs to the end of the file
            box_size = size - offset
        if box_size < 8:
            return f"box at byte {offset} has an invalid size {box_size}"
        if offset + box_size > size:
            name = box_type.decode("latin-1")
            return f"box '{name}' at byte {offset} declares {box_size} bytes but the file ends at byte {size}"
        seen.add(box_type)
        offset += box_size
    if b"moov" not in seen and b"moof" not in seen:
        return "no 'moov' box (the file was cut or never finalised)"
    return None


def _read_vint(f: BinaryIO) -> tuple[int, int, bool] | None:
    """One EBML variable-length integer: (value, length in bytes, all value bits set = unknown size)."""
    first = f.read(1)
    if not first:
        return None
    b0 = first[0]
    length = next((i + 1 for i in range(8) if b0 & (0x80 >> i)), 0)
    if length == 0:
        return None
    rest = f.read(length - 1)
    if len(rest) != length - 1:
        return None
    value = b0 & (0xFF >> length)
    for b in rest:
        value = (value << 8) | b
    return value, length, value == (1 << (7 * length)) - 1


def _matroska_problem(f: BinaryIO, size: int) -> str | None:
    f.seek(len(EBML_MAGIC))
    header = _read_vint(f)
    if header is None:
        return "EBML header is cut"
    f.seek(f.tell() + header[0])
    if f.read(4) != MATROSKA_SEGMENT:
        return None  # not a layout this check knows; leave the verdict to FFmpeg
    segment = _read_vint(f)
    if segment is None:
        return "Matroska segment header is cut"
    segment_size, _, unknown = segment
    end = f.tell() + segment_size
    if not unknown and end > size:
        return f"Matroska segment declares {end} bytes but the file has {size}"
    return None
