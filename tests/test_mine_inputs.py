"""``mine --videos`` beyond local files: S3 objects, Parquet/CSV/JSON-lines manifests with spans, video
WebDataset tars (as video2dataset writes them), http(s) URLs, and each kind of bad input.

Real components: a moto S3 server and a ranged HTTP server on 127.0.0.1, real videos, mediapipe, Ray.
Each remote run is compared with the same videos mined from local files.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from maskahand.core import storage
from maskahand.core.config import MineRecipe
from maskahand.core.configbase import apply_overrides

SMALL = ["detector.backend=mediapipe", "mine.frame_max_side=256"]  # as conftest's mined_clip_shards
# 10 sampled frames (a short clip of its own), and 37 (one full clip and an end-aligned tail clip)
VIDEOS = ("ego4d_stirring.mp4", "hands_pillow.mp4")


def small_recipe() -> MineRecipe:
    return apply_overrides(MineRecipe(), SMALL)


def run_mine(videos: str, out: str | Path, *overrides: str) -> dict[str, Any]:
    from maskahand.mine.pipeline import mine

    return mine(apply_overrides(MineRecipe(), [*SMALL, *overrides]), videos, out, progress=False)


# --- what a run produced, read back wherever --out is (a local folder or a bucket) ----------------------


def jsonl_at(path: str) -> list[dict[str, Any]]:
    """The records of a JSON-lines file or object."""
    return [json.loads(line) for line in storage.read_bytes(path).splitlines() if line.strip()]


def ledger_of(out: str | Path) -> dict[str, dict]:
    return {r["video_id"]: r for r in jsonl_at(storage.join(str(out), "ledger.jsonl"))}


def clips_by_video(out: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Every clip of an output, per video id, in frame order: key, frames' digest, detections, indices."""
    from maskahand.shards.reader import clip_dataset

    found: dict[str, list[dict[str, Any]]] = {}
    shards = storage.join(str(out), "shards")
    for s in clip_dataset(shards, split_by_node=False, split_by_worker=False):
        found.setdefault(s.meta["video_id"], []).append(
            {
                "key": s.key,
                "frames": hashlib.sha256(s.frames.numpy().tobytes()).hexdigest(),
                "shape": tuple(s.frames.shape),
                "frame_indices": s.meta["frame_indices"],
                "detections": s.meta["detections"],
                "interacting": s.meta["interacting"],
                "source": s.meta.get("source"),
            }
        )
    for clips in found.values():
        clips.sort(key=lambda c: c["frame_indices"][0])
    return found


def assert_same_clips(got: list[dict], want: list[dict], *, same_keys: bool = True) -> None:
    """Clip for clip: the same frames (pixels), detections, source frame indices (and keys)."""
    fields = ("frames", "shape", "frame_indices", "detections", "interacting")
    assert [{f: c[f] for f in fields} for c in got] == [{f: c[f] for f in fields} for c in want]
    if same_keys:
        assert [c["key"] for c in got] == [c["key"] for c in want]


def frames_log(out: str | Path, video_id: str) -> list[dict]:
    from maskahand.mine.ledger import video_stem

    return jsonl_at(storage.join(str(out), "parts", f"{video_stem(video_id)}.frames.jsonl"))


# --- servers and inputs ---------------------------------------------------------------------------------


class RangedFiles(http.server.BaseHTTPRequestHandler):
    """GET/HEAD with byte ranges (what fsspec's http filesystem needs); /private/... answers 403."""

    files: dict[str, bytes] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def _serve(self, body: bool) -> None:
        if self.path.startswith("/private/"):
            self.send_error(403, "Forbidden")
            return
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start, end, status = 0, len(data) - 1, 200
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes="):
            a, _, b = ranged[6:].partition("-")
            start, end, status = int(a), min(int(b) if b else len(data) - 1, len(data) - 1), 206
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if body:
            self.wfile.write(data[start : end + 1])

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)


@pytest.fixture(scope="module")
def http_videos(shared_data):
    """An HTTP server on 127.0.0.1 serving the test videos (ranges; /private/ is forbidden)."""
    RangedFiles.files = {f"/{n}": (shared_data / "videos" / n).read_bytes() for n in VIDEOS}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangedFiles)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/video.mp4"  # nothing listens there any more


@pytest.fixture(scope="module")
def local_reference(mined_clip_shards):
    """The test videos mined from local files (the session's shared run, same settings as SMALL): what
    every other input kind must reproduce."""
    clips = clips_by_video(mined_clip_shards)
    assert set(VIDEOS) <= set(clips) and all(clips[v] for v in VIDEOS)
    return mined_clip_shards, clips


def upload_videos(shared_data: Path, prefix: str) -> None:
    for name in VIDEOS:
        storage.upload_file(shared_data / "videos" / name, storage.join(prefix, name))


# --- S3 objects -----------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_s3_prefix_gives_the_local_clips(local_reference, shared_data, s3_bucket, tmp_path):
    from maskahand.mine.pipeline import plan

    ref_out, ref = local_reference
    prefix = storage.join(s3_bucket, "collection", "videos")
    upload_videos(shared_data, prefix)
    out = storage.join(s3_bucket, "clips")  # the output on the bucket as well: no local folder involved
    summary = run_mine(prefix + "/", out)
    assert summary["videos_ok"] == len(VIDEOS), summary["failed"]
    got = clips_by_video(out)
    assert sorted(got) == sorted(VIDEOS)
    for video_id in VIDEOS:
        assert_same_clips(got[video_id], ref[video_id])
        assert got[video_id][0]["source"] is None  # plain objects add nothing to the clips' metadata
    ledger = ledger_of(out)
    assert ledger["hands_pillow.mp4"]["path"] == storage.join(prefix, "hands_pillow.mp4")
    assert ledger["hands_pillow.mp4"]["fingerprint"]["etag"]  # the object's version, from its listing

    # resume: nothing to do; an object replaced under the same name is mined again
    _, todo, _ = plan(small_recipe(), prefix, out)
    assert todo == []
    storage.upload_file(
        shared_data / "videos" / "ego4d_stirring.mp4", storage.join(prefix, "hands_pillow.mp4")
    )
    _, todo, _ = plan(small_recipe(), prefix, out)
    assert [t.video_id for t in todo] == ["hands_pillow.mp4"]


# --- manifests ------------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_parquet_manifest_spans_columns_and_bad_rows(
    local_reference, shared_data, s3_bucket, http_videos, tmp_path
):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ref_out, ref = local_reference
    prefix = storage.join(s3_bucket, "epic")
    upload_videos(shared_data, storage.join(prefix, "videos"))
    spans = [[0.0, 2.0], [3.0, 7.4]]
    rows = [
        # a video id from the key column; an extra column carried into the clips
        {
            "url": storage.join(prefix, "videos", "ego4d_stirring.mp4"),
            "key": "ego4d_stirring.mp4",
            "clips": None,
            "caption": "stirring a pot",
        },
        # a path relative to the manifest, mined only inside two spans
        {"url": "videos/hands_pillow.mp4", "key": "pillow-spans", "clips": spans, "caption": "pillow"},
        {"url": f"{http_videos}/ego4d_stirring.mp4", "key": "over-http", "clips": None, "caption": None},
        {
            "url": storage.join(prefix, "videos", "missing.mp4"),
            "key": "missing",
            "clips": None,
            "caption": None,
        },
        {"url": None, "key": "no-url", "clips": None, "caption": "a row without its URL"},
        {"url": f"{http_videos}/private/secret.mp4", "key": "forbidden", "clips": None, "caption": None},
        {"url": closed_port_url(), "key": "unreachable", "clips": None, "caption": None},
    ]
    local = tmp_path / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist(rows), local, row_group_size=2)
    manifest = storage.join(prefix, "manifest.parquet")
    storage.upload_file(local, manifest)
    out = storage.join(s3_bucket, "clips")
    summary = run_mine(manifest, out)
    ledger = ledger_of(out)
    assert {v: r["status"] for v, r in ledger.items()} == {
        "ego4d_stirring.mp4": "ok",
        "pillow-spans": "ok",
        "over-http": "ok",
        "missing": "failed",
        "no-url": "failed",
        "forbidden": "failed",
        "unreachable": "failed",
    }
    assert summary["videos_failed"] == 4
    reasons = {v: r["reason"] for v, r in ledger.items() if r["status"] == "failed"}
    assert reasons["missing"].startswith("ObjectNotFoundError") and "missing.mp4" in reasons["missing"]
    assert reasons["no-url"].startswith("ManifestRowError") and "manifest.parquet:row 4" in reasons["no-url"]
    assert "no URL in column 'url'" in reasons["no-url"]
    assert reasons["forbidden"].startswith("StoragePermissionError") and "secret.mp4" in reasons["forbidden"]
    assert (
        reasons["unreachable"].startswith("StorageUnreachableError") and "127.0.0.1" in reasons["unreachable"]
    )

    got = clips_by_video(out)
    assert_same_clips(got["ego4d_stirring.mp4"], ref["ego4d_stirring.mp4"])
    assert got["ego4d_stirring.mp4"][0]["source"] == {
        "caption": "stirring a pot",
        "key": "ego4d_stirring.mp4",
    }
    assert_same_clips(got["over-http"], ref["ego4d_stirring.mp4"], same_keys=False)

    # spans: one clip per span here (both shorter than 32 frames), never crossing a span's edge, and
    # each frame as the whole-video run saw it (same pixels' source frame, same detections)
    whole = {f["index"]: f for f in frames_log(ref_out, "hands_pillow.mp4")}
    pillow = got["pillow-spans"]
    in_span = [[f for f in whole.values() if a <= f["pts"] < b] for a, b in spans]
    assert [c["frame_indices"] for c in pillow] == [[f["index"] for f in frames] for frames in in_span]
    for clip in pillow:
        assert clip["detections"] == [whole[i]["hands"] for i in clip["frame_indices"]]
        assert clip["source"] == {"caption": "pillow", "clips": spans, "key": "pillow-spans"}
    manifest_rows = [
        r for r in jsonl_at(storage.join(out, "manifest.jsonl")) if r["video_id"] == "pillow-spans"
    ]
    positions = [(f["pos"], f["index"]) for f in frames_log(out, "pillow-spans")]
    for row, frames in zip(manifest_rows, in_span):
        # start/stop index the video's own frames log
        assert [i for _, i in positions[row["start"] : row["stop"]]] == [f["index"] for f in frames]


def test_manifest_formats_read_the_same_rows(tmp_path):
    from maskahand.core.config import MineInputConfig
    from maskahand.mine.sources import ManifestRowError, discover_inputs

    rows = [
        {"video": "s3://b/v/a.mp4", "id": "a", "spans": "[[1.5, 4]]", "note": "first"},
        {"video": "v/b.mp4", "id": "", "spans": "", "note": "second"},
        {"video": "", "id": "c", "spans": "", "note": "no url"},
        {"video": "s3://b/v/d.mp4", "id": "d", "spans": "[[3, 1]]", "note": "bad span"},
    ]
    (tmp_path / "m.csv").write_text(
        "video,id,spans,note\n"
        + "".join(f'{r["video"]},{r["id"]},"{r["spans"]}",{r["note"]}\n' for r in rows)
    )
    (tmp_path / "m.tsv").write_text(
        "video\tid\tspans\tnote\n" + "".join("\t".join(r.values()) + "\n" for r in rows)
    )
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = MineInputConfig(url_col="video", key_col="id", clips_col="spans")
    results = {}
    for ext in ("csv", "tsv", "jsonl"):
        tasks = discover_inputs(str(tmp_path / f"m.{ext}"), cfg)
        results[ext] = [(t.video_id, t.path if t.problem is None else "", t.spans, t.metadata) for t in tasks]
        assert [type(t.problem) for t in tasks] == [
            type(None),
            type(None),
            ManifestRowError,
            ManifestRowError,
        ]
        assert "no URL in column 'video'" in str(tasks[2].problem) and "empty or negative" in str(
            tasks[3].problem
        )
    tasks = discover_inputs(f"file://{tmp_path / 'm.jsonl'}", cfg)  # file:// is a local path
    results["file-url"] = [
        (t.video_id, t.path if t.problem is None else "", t.spans, t.metadata) for t in tasks
    ]
    assert results["csv"] == results["tsv"] == results["jsonl"] == results["file-url"]
    assert results["csv"][:2] == [
        ("a", "s3://b/v/a.mp4", ((1.5, 4.0),), (("note",), ("a", "first"))),
        ("v/b.mp4", str(tmp_path / "v" / "b.mp4"), None, (("note",), ("", "second"))),
    ]
    only = discover_inputs(
        str(tmp_path / "m.jsonl"), MineInputConfig("video", "id", "spans", carry_columns=[])
    )
    assert [t.metadata for t in only[:2]] == [((), ("a",)), None]


def test_unreadable_manifest_missing_bucket_exit_2(s3_server, tmp_path, capsys):
    from maskahand.cli import main

    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet at all")
    (tmp_path / "nourl.csv").write_text("path,key\n/v/a.mp4,a\n")
    cases = {
        str(tmp_path / "bad.parquet"): "not a Parquet file",
        str(tmp_path / "nourl.csv"): "no column 'url' (mine.input.url_col)",
        "s3://no-such-bucket-18a/videos/": "the bucket does not exist",
    }
    for videos, message in cases.items():
        status = main(["mine", "--videos", videos, "--out", str(tmp_path / "out"), "--no-progress", *SMALL])
        # (the in-process moto server logs its requests through werkzeug: not the command's output)
        err = [line for line in capsys.readouterr().err.strip().splitlines() if "werkzeug" not in line]
        assert status == 2, (videos, err)
        assert len(err) == 1 and message in err[0] and err[0].startswith("maskahand mine: "), err


# --- video WebDataset tars ------------------------------------------------------------------------------


def write_video_tar(path: Path, samples: list[tuple[str, bytes, dict]]) -> None:
    """A tar as video2dataset writes one: KEY.mp4, KEY.json and KEY.txt per sample (webdataset's TarWriter)."""
    import webdataset as wds

    with wds.TarWriter(str(path)) as sink:
        for key, video, meta in samples:
            sink.write(
                {
                    "__key__": key,
                    "mp4": video,
                    "json": json.dumps(meta).encode(),
                    "txt": meta["caption"].encode(),
                }
            )


@pytest.mark.ray
@pytest.mark.slow
def test_video_webdataset_tars_give_the_local_clips(local_reference, shared_data, s3_bucket, tmp_path):
    ref_out, ref = local_reference
    stirring = (shared_data / "videos" / "ego4d_stirring.mp4").read_bytes()
    pillow = (shared_data / "videos" / "hands_pillow.mp4").read_bytes()
    meta = {k: {"url": f"https://example.org/{k}.mp4", "caption": f"video {k}", "key": k} for k in "0123"}
    write_video_tar(
        tmp_path / "00000.tar",
        [
            ("000000000", stirring, meta["0"]),
            ("000000001", b"<html>404</html>" * 64, meta["1"]),
            ("000000002", pillow, meta["2"]),
        ],
    )
    write_video_tar(tmp_path / "00001.tar", [("000000003", pillow, meta["3"])])
    whole = (tmp_path / "00001.tar").read_bytes()
    cut = whole[: whole.index(pillow[:64]) + len(pillow) // 2]  # the copy stopped inside the video
    (tmp_path / "00001.tar").write_bytes(cut)
    shards = storage.join(s3_bucket, "howto", "shards")
    for name in ("00000.tar", "00001.tar"):
        storage.upload_file(tmp_path / name, storage.join(shards, name))

    out = storage.join(s3_bucket, "clips")
    run_mine(storage.join(shards, "{00000..00001}.tar"), out)
    ledger = ledger_of(out)
    assert {v: r["status"] for v, r in ledger.items()} == {
        "00000/000000000": "ok",
        "00000/000000001": "failed",
        "00000/000000002": "ok",
        "00001/000000003": "failed",
    }
    bad, truncated = ledger["00000/000000001"]["reason"], ledger["00001/000000003"]["reason"]
    assert bad.startswith("NotAVideoError") and "00000.tar#000000001.mp4" in bad
    assert truncated.startswith("TruncatedVideoError") and "00001.tar#000000003.mp4" in truncated
    assert f"the tar ends at byte {len(cut)}" in truncated

    got = clips_by_video(out)
    assert_same_clips(got["00000/000000000"], ref["ego4d_stirring.mp4"], same_keys=False)
    assert_same_clips(got["00000/000000002"], ref["hands_pillow.mp4"], same_keys=False)
    from maskahand.shards.schema import make_key

    for clip in got["00000/000000002"]:
        assert clip["key"] == make_key("00000/000000002", clip["frame_indices"][0])
        assert clip["source"] == {
            "key": "000000002",
            "tar": storage.join(shards, "00000.tar"),
            "member": "000000002.mp4",
            "json": meta["2"],
        }


def test_tar_index_reads_member_ranges(tmp_path):
    from maskahand.mine.sources import discover_inputs
    from maskahand.video.source import StreamSource, VideoInput

    write_video_tar(
        tmp_path / "a.tar", [("k1", b"x" * 1000, {"caption": "one"}), ("k2", b"y" * 10, {"caption": "two"})]
    )
    with tarfile.open(tmp_path / "a.tar") as tar:
        want = {m.name: (m.offset_data, m.size) for m in tar.getmembers()}
    tasks = discover_inputs(str(tmp_path / "a.tar"))
    assert [t.video_id for t in tasks] == ["a/k1", "a/k2"]
    for task, key, body in zip(tasks, ("k1", "k2"), (b"x" * 1000, b"y" * 10)):
        assert isinstance(task.source, VideoInput)
        assert (task.source.offset, task.source.size) == want[f"{key}.mp4"]
        assert (task.source.meta_offset, task.source.meta_size) == want[f"{key}.json"]
        src = StreamSource(task.source)
        with src.open() as f:
            assert f.read() == body
            f.seek(-3, io.SEEK_END)
            assert f.read(10) == body[-3:]
        assert json.loads(src.read_meta()) == {"caption": "one" if key == "k1" else "two"}
        src.close()
