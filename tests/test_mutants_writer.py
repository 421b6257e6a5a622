"""Shard-writer behaviour that ``make mutate`` found unpinned (mutants of shards/writer.py that survived).

Tar facts are read back with the standard library's ``tarfile`` and raw header bytes; sizes are written
out by hand from the tar format (512-byte blocks, two end blocks, 10240-byte records).
"""

from __future__ import annotations

import json
import tarfile

import pytest
import torch

from maskahand.core.config import ShardWriterConfig
from maskahand.shards.schema import CLIP_SCHEMA, MASKAHAND_SCHEMA, ClipSample, MaskAHandSample, SchemaError
from maskahand.shards.writer import ShardWriter, TarShard, final_size, member_size


def clip(key: str, seed: int = 0) -> ClipSample:
    frames = torch.randint(
        0, 256, (2, 3, 16, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )
    meta = {
        "schema": CLIP_SCHEMA,
        "video_id": "v.mp4",
        "video_path": "/v.mp4",
        "fps": 5.0,
        "frame_indices": [0, 6],
        "timestamps": [0.0, 0.2],
        "width": 24,
        "height": 16,
        "source_width": 24,
        "source_height": 16,
        "detections": [[{"box": [1.0, 2.0, 10.0, 12.0], "state": "contact", "score": 0.995}], []],
        "interacting": [0],
        "rule": "test",
        "detector": {"name": "test", "version": "1"},
    }
    return ClipSample(key=key, frames=frames, meta=meta)


def test_member_and_final_sizes_follow_the_tar_format():
    assert [member_size(n) for n in (0, 1, 512, 513, 1024)] == [512, 1024, 1024, 1536, 1536]
    assert all(isinstance(member_size(n), int) for n in (0, 1, 513))
    # members + two 512-byte end blocks, rounded up to whole 10240-byte records
    assert [final_size(n) for n in (0, 512, 9216, 9217, 10240)] == [10240, 10240, 10240, 20480, 20480]
    assert all(isinstance(final_size(n), int) for n in (0, 9217))


def test_headers_are_gnu_with_fixed_owner_time_and_mode(tmp_path):
    shard = TarShard(tmp_path / "deep" / "er" / "s.tar", "test/1")  # missing parent folders are made
    shard.add("k0", [("json", b"{}"), ("000.jpg", b"\xff\xd8jpeg")])
    info = shard.finish()
    data = info.path.read_bytes()
    assert data[257:265] == b"ustar  \x00"  # GNU magic (POSIX/PAX would be b"ustar\x0000")
    assert len(data) == info.bytes == final_size(2 * 1024) == 10240
    with tarfile.open(info.path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["k0.json", "k0.000.jpg"]
    for m in members:
        assert (m.mtime, m.mode, m.uid, m.gid, m.uname, m.gname) == (0, 0o644, 0, 0, "", "")
    manifest = json.loads(info.manifest_path.read_text())
    assert manifest == {
        "shard": "s.tar",
        "count": 1,
        "keys": ["k0"],
        "sha256": info.sha256,
        "bytes": 10240,
        "schema": "test/1",
    }


def test_bad_names_are_refused_and_named(tmp_path):
    with pytest.raises(ValueError, match=r"shard name must end in \.tar: .*s\.zip"):
        TarShard(tmp_path / "s.zip", "test/1")
    for prefix in ("", "a/b", "a.b"):
        with pytest.raises(ValueError, match=f"prefix {prefix!r} must be non-empty, without '/' or '.'"):
            ShardWriter(tmp_path, prefix)
    with pytest.raises(ValueError, match=r"kind must be one of \['clip', 'maskahand'\], got 'video'"):
        ShardWriter(tmp_path, "p", kind="video")  # type: ignore[arg-type]
    writer = ShardWriter(tmp_path, "p")
    for name in ("sub/x.tar", "x.tgz"):
        with pytest.raises(ValueError, match=f"plain file name ending in .tar, got {name!r}"):
            writer.set_next_name(name)


def test_write_errors_name_the_sample_and_shard(tmp_path):
    writer = ShardWriter(tmp_path, "p", kind="clip", validate=False)
    other = MaskAHandSample(
        key="m0", frames=torch.zeros(1, 3, 8, 8, dtype=torch.uint8), targets=torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
        heatmaps=torch.zeros(1, 8, 8), meta={"schema": MASKAHAND_SCHEMA},
    )  # fmt: skip
    with pytest.raises(SchemaError, match=r"^sample m0: a clip writer got a MaskAHandSample$"):
        writer.write(other)
    with pytest.raises(SchemaError, match=r"^a clip writer got a object$"):
        writer.write(object())  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="bad.key"):
        writer.write(clip("bad.key"))  # keys are checked even without validation
    wrong = clip("c0")
    wrong.meta["schema"] = "other/1"
    with pytest.raises(SchemaError, match=r"^sample c0: meta.schema must be 'maskahand.clip/1'$"):
        writer.write(wrong)
    writer.write(clip("c1"))
    with pytest.raises(
        SchemaError, match=r"^shard p-000000.tar, sample c1: duplicate key in the same shard$"
    ):
        writer.write(clip("c1"))
    writer.abort()


def test_a_shard_is_rolled_only_when_it_would_grow_past_max_bytes(tmp_path):
    with ShardWriter(tmp_path / "one", "p", ShardWriterConfig(max_bytes=2**40)) as writer:
        writer.write(clip("c0", 0))
        writer.write(clip("c1", 1))
    size = (tmp_path / "one" / "p-000000.tar").stat().st_size
    with ShardWriter(tmp_path / "exact", "p", ShardWriterConfig(max_bytes=size)) as writer:
        writer.write(clip("c0", 0))
        writer.write(clip("c1", 1))
    assert [i.count for i in writer.finished] == [2]  # exactly max_bytes still fits
    with ShardWriter(tmp_path / "less", "p", ShardWriterConfig(max_bytes=size - 1)) as writer:
        writer.write(clip("c0", 0))
        writer.write(clip("c1", 1))
    assert [i.count for i in writer.finished] == [1, 1]


def test_target_format_reaches_the_members(tmp_path):
    sample = MaskAHandSample(
        key="m0",
        frames=torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
        targets=torch.full((1, 3, 8, 8), 7, dtype=torch.uint8),
        heatmaps=torch.zeros(1, 8, 8),
        meta={"schema": MASKAHAND_SCHEMA, "clip_key": "m0", "video_id": "v", "size": 8, "targets": [{}]},
    )
    for fmt, suffix in (("png", "t00.png"), ("jpeg", "t00.jpg")):
        with ShardWriter(
            tmp_path / fmt, "p", ShardWriterConfig(target_format=fmt), "maskahand", validate=False
        ) as w:
            w.write(sample)
        with tarfile.open(w.finished[0].path) as tar:
            assert f"m0.{suffix}" in tar.getnames()


def test_abort_drops_the_open_shard_and_can_be_repeated(tmp_path):
    writer = ShardWriter(tmp_path, "p")
    writer.write(clip("c0"))
    assert (tmp_path / "p-000000.tar.partial").is_file()
    writer.abort()
    writer.abort()
    assert list(tmp_path.iterdir()) == [] and writer.finished == []
    shard = TarShard(tmp_path / "s.tar", "test/1")
    shard.abort()
    shard.abort()  # the partial is already gone: no error
    assert list(tmp_path.iterdir()) == []
