"""Collections at scale: streaming a big manifest, and what each video costs beyond its frames.

    python -m benchmarks.collection [--rows 1000000] [--videos 2000] [--frames 10] [--repeats 1] \\
        [--out outputs/bench-collection/results.json]

1. Manifest: a generated ``--rows``-row Parquet manifest (url, key, caption; row groups of 64k rows).
   ``manifest_read_s``: time to stream every row (:func:`maskahand.mine.sources.read_manifest_rows`);
   ``manifest_tasks_s``/``manifest_tasks_rss_mb``: time and resident memory added by turning all rows
   into mining tasks (what ``mine`` holds while it runs), and the peak RSS of this process.
2. Per-video overhead: ``--videos`` very short real H.264 videos (``--frames`` frames at 5 fps, made once
   with PyAV and cached) mined end to end vs ONE video with the same total frames, same detector
   (default ``precomputed`` with no detections: the cost measured is everything but detection). Both
   from local files and from an S3 server (moto, started here on 127.0.0.1 in a process of its own, as a
   real endpoint would be: not sharing this process's GIL), after one untimed warm-up run; S3 also
   without the miners' prefetch (``*_s3_noprefetch``), and locally without batches that hold several videos
   (``*_local_unpacked``: ``workers.pack_videos=false``, one video per batch as before) and with one miner
   (``*_local_1miner``, ``*_s3_1miner``: the single video is mined by one miner, the many by two unless told; with one
   each, the difference is only what each video costs). A run's time leaves out its start-up (actors,
   detector load: once per run); each figure is the fastest of ``--repeats`` runs made in turn, so compare
   figures of one invocation only. Per-video overhead = (time for the many - time for the one) / videos;
   the goal compares it with a ``--frames``-frame video's own cost (its share of the single-video run).
   ``s3_requests_many``: the requests the server logged while the many were mined (first run), and
   ``s3_server_cpu_ms_per_video`` its CPU time per video (on a small machine it competes with the miners).
3. ``EXTRA_MEASUREMENTS``: functions ``(args, workdir) -> dict`` whose keys join the results (the resume
   benchmark of the ledger registers there).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def measure_resume(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``mine``'s start-up and resume over a ledger of ``--resume-videos`` finished videos
    (:mod:`benchmarks.collection_resume`; its generated inputs are kept under ``--cache``)."""
    from benchmarks.collection_resume import bench_resume

    if args.resume_videos <= 0:
        return {}
    return bench_resume(Path(args.cache) / "resume", args.resume_videos, args.resume_s3_videos)


#: More measurements, each ``fn(args, workdir) -> {key: value}``, run after the ones here.
EXTRA_MEASUREMENTS: list[Callable[[argparse.Namespace, Path], dict[str, Any]]] = [measure_resume]

FPS = 5
SIZE = (160, 120)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- 1. manifest ----------------------------------------------------------------------------------------


def write_manifest(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return
    schema = pa.schema([("url", pa.string()), ("key", pa.string()), ("caption", pa.string())])
    tmp = path.with_suffix(".partial")
    with pq.ParquetWriter(tmp, schema) as w:
        for start in range(0, rows, 65536):
            ids = range(start, min(rows, start + 65536))
            w.write_table(
                pa.table(
                    {
                        "url": [f"s3://collection/videos/{i // 10000:03d}/{i:09d}.mp4" for i in ids],
                        "key": [f"{i:09d}" for i in ids],
                        "caption": [f"someone does thing number {i}" for i in ids],
                    },
                    schema=schema,
                )
            )
    tmp.replace(path)


def measure_manifest(rows: int, cache: Path) -> dict[str, Any]:
    from maskahand.mine.sources import discover_inputs, read_manifest_rows

    path = cache / f"manifest-{rows}.parquet"
    write_manifest(path, rows)
    t0 = time.perf_counter()
    n = sum(1 for _ in read_manifest_rows(str(path)))
    read_s = time.perf_counter() - t0
    read_peak = peak_rss_mb()  # streamed: batch by batch, the file is never held whole
    before = rss_mb()
    t0 = time.perf_counter()
    tasks = discover_inputs(str(path))
    tasks_s = time.perf_counter() - t0
    after = rss_mb()
    assert len(tasks) == rows == n
    del tasks
    return {
        "manifest_rows": n,
        "manifest_bytes": path.stat().st_size,
        "manifest_read_s": round(read_s, 3),
        "manifest_rows_per_s": round(n / read_s),
        "manifest_read_peak_rss_mb": round(read_peak, 1),
        "manifest_tasks_s": round(tasks_s, 3),
        "manifest_tasks_rss_mb": round(after - before, 1),
        "manifest_tasks_bytes_per_row": round((after - before) * 2**20 / rows, 1),
        "manifest_peak_rss_mb": round(peak_rss_mb(), 1),
    }


# --- 2. per-video overhead ------------------------------------------------------------------------------


def encode_video(path: Path, frames: int, seed: int) -> None:
    """A real H.264 video of moving gradients (``frames`` frames at 5 fps)."""
    import av
    import numpy as np

    tmp = path.with_name(f".{path.name}.partial.mp4")
    w, h = SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(frames):
            t = seed * 7 + i
            img = np.stack([(xx + 3 * t) % 256, (yy + 5 * t) % 256, (xx + yy + t) % 256], -1).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)


def make_videos(cache: Path, videos: int, frames: int) -> tuple[list[Path], Path]:
    from tqdm import tqdm

    many = cache / f"short-{frames}f"
    many.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(videos) if not (many / f"{i:05d}.mp4").exists()]
    for i in tqdm(missing, desc="encode short videos", unit="video", disable=not missing):
        encode_video(many / f"{i:05d}.mp4", frames, i)
    one = cache / f"long-{videos * frames}f"
    one.mkdir(exist_ok=True)
    if not (one / "long.mp4").exists():
        encode_video(one / "long.mp4", videos * frames, 0)
    return [many / f"{i:05d}.mp4" for i in range(videos)], one


def mining_seconds(
    videos: str, detections: Path, out: Path, detector: str, extra: list[str] | None = None
) -> tuple[float, dict[str, Any]]:
    from maskahand.core.config import MineRecipe
    from maskahand.core.configbase import apply_overrides
    from maskahand.mine.pipeline import mine

    overrides = [f"detector.backend={detector}", "mine.frame_max_side=160", *(extra or [])]
    if detector == "precomputed":
        overrides += [f"detector.precomputed.path={detections}", "detector.precomputed.on_missing=empty"]
    recipe = apply_overrides(MineRecipe(), overrides)
    t0 = time.perf_counter()
    summary = mine(recipe, videos, out, progress=True)
    seconds = time.perf_counter() - t0
    if summary["videos_failed"]:
        raise RuntimeError(f"{summary['videos_failed']} videos failed: {list(summary['failed'].items())[:3]}")
    return seconds, summary


def overhead(many_s: float, one_s: float, videos: int) -> dict[str, float]:
    per_video_ms = (many_s - one_s) / videos * 1000
    own_ms = one_s / videos * 1000  # a short video's share of the single-video run: its frames' cost
    return {"per_video_overhead_ms": per_video_ms, "video_cost_ms": own_ms, "ratio": per_video_ms / own_ms}


def measure_overhead(args: argparse.Namespace, cache: Path, work: Path) -> dict[str, Any]:
    """Each run ``--repeats`` times, in turn (local many, local one, S3 many, S3 one, S3 many without
    prefetch), each figure the fastest of its runs: what other work on a shared machine adds is noise.
    A run's time is ``mine``'s wall time less its start-up (Ray actors started, detector loaded, first
    batch decoded: once per run, whatever the number of videos)."""
    from maskahand.core import storage
    from maskahand.core.rayutil import init_ray

    many, one = make_videos(cache, args.videos, args.frames)
    detections = cache / "no-detections.jsonl"
    detections.write_text(
        json.dumps({"video": "none", "frame": 1, "width": 1, "height": 1, "hands": []}) + "\n"
    )
    server = start_s3(work)  # idle while the local runs are timed
    try:
        import boto3

        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="bench-collection")
        t0 = time.perf_counter()
        for p in many:
            storage.upload_file(p, f"s3://bench-collection/many/{p.name}")
        storage.upload_file(one / "long.mp4", "s3://bench-collection/one/long.mp4")
        upload_s = time.perf_counter() - t0
        init_ray()  # started once, outside every timing
        warm = work / "warm.txt"  # first-use costs (worker imports, detector files) paid before any timing
        warm.write_text("".join(f"{p.resolve()}\n" for p in many[:4]))
        mining_seconds(str(warm), detections, work / "warm-up", args.detector)
        listing = work / "many.txt"  # the first --videos of the cache (it may hold more)
        listing.write_text("".join(f"{p.resolve()}\n" for p in many))
        runs: dict[str, tuple[str, list[str]]] = {
            "local_many": (str(listing), []),
            "local_one": (str(one), []),
            # the same with no batch holding two videos (how mining ran before workers.pack_videos)
            "local_many_unpacked": (str(listing), ["workers.pack_videos=false"]),
            # one miner, as the single video has: what each video costs on the same resources (with the
            # default two miners, the many also decode two videos at once, which one video cannot)
            "local_many_1miner": (str(listing), ["workers.decoders=1"]),
            "s3_many_1miner": ("s3://bench-collection/many/", ["workers.decoders=1"]),
            "s3_many": ("s3://bench-collection/many/", []),
            "s3_one": ("s3://bench-collection/one/", []),
            "s3_many_noprefetch": ("s3://bench-collection/many/", ["workers.prefetch=false"]),
        }
        best: dict[str, float] = {}
        wall: dict[str, float] = {}  # with the start-up (earlier versions of this benchmark timed these)
        frames = 0
        for r in range(args.repeats):
            for name, (videos, extra) in runs.items():
                since, cpu0 = server.mark(), server.cpu_seconds()
                seconds, summary = mining_seconds(
                    videos, detections, work / f"{name}-{r}", args.detector, extra
                )
                # the actors' start and the detector's load come once per run, not per video, and vary by
                # seconds on a busy machine: left out (the listing, every video and the ledger stay in)
                wall[name] = min(wall.get(name, seconds), seconds)
                seconds -= summary["startup_seconds_this_run"]
                best[name] = min(best.get(name, seconds), seconds)
                if name == "local_many":
                    frames = summary["frames"]
                if name == "s3_many" and r == 0:
                    requests = count_requests(server, since)
                    server_cpu_s = server.cpu_seconds() - cpu0
    finally:
        server.stop()
    out: dict[str, Any] = {
        "videos": args.videos,
        "frames_per_video": args.frames,
        "detector": args.detector,
        "repeats": args.repeats,
        "frames_mined": frames,
        "s3_upload_s": round(upload_s, 2),
    }
    out.update({f"{name}_s": round(seconds, 2) for name, seconds in best.items()})
    out.update({f"{name}_wall_s": round(seconds, 2) for name, seconds in wall.items()})
    for key, many_run, one_run in (
        ("local", "local_many", "local_one"),
        ("s3", "s3_many", "s3_one"),
        ("s3_noprefetch", "s3_many_noprefetch", "s3_one"),
        ("local_unpacked", "local_many_unpacked", "local_one"),
        ("local_1miner", "local_many_1miner", "local_one"),
        ("s3_1miner", "s3_many_1miner", "s3_one"),
    ):
        o = overhead(best[many_run], best[one_run], args.videos)
        out[f"per_video_overhead_ms_{key}"] = round(o["per_video_overhead_ms"], 2)
        out[f"video_cost_ms_{key}"] = round(o["video_cost_ms"], 2)
        out[f"overhead_ratio_{key}"] = round(o["ratio"], 3)
    out.update(
        s3_requests_many=requests,  # what mining the many videos asked the server, by kind
        s3_requests_per_video=round(sum(requests.values()) / args.videos, 2),
        # the moto server's own CPU per video while the many were mined (shared with the miners here)
        s3_server_cpu_ms_per_video=round(server_cpu_s / args.videos * 1000, 2),
    )
    out["overhead_goal"] = "per-video overhead <= 10% of a short video's own cost (ratio <= 0.1)"
    return out


def measure_with_detector(args: argparse.Namespace, cache: Path, work: Path) -> dict[str, Any]:
    """The same comparison with a detector that runs (``--with-detector``, default mediapipe: what ``mine``
    uses without hircnn weights) on the first ``--detector-videos`` short videos, locally and from S3
    (a moto server of its own): the overhead in ms is the pipeline's as above; the video's own cost now
    includes finding its hands."""
    from maskahand.core import storage

    if args.detector_videos <= 0:
        return {}
    many, one = make_videos(cache, args.detector_videos, args.frames)
    listing = work / "detector-many.txt"
    listing.write_text("".join(f"{p.resolve()}\n" for p in many))
    name = args.with_detector
    warm = work / "detector-warm.txt"
    warm.write_text("".join(f"{p.resolve()}\n" for p in many[:2]))
    (work / "detector-s3").mkdir(exist_ok=True)
    server = start_s3(work / "detector-s3")
    try:
        import boto3

        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="bench-detector")
        for p in many:
            storage.upload_file(p, f"s3://bench-detector/many/{p.name}")
        storage.upload_file(one / "long.mp4", "s3://bench-detector/one/long.mp4")
        mining_seconds(str(warm), work, work / f"{name}-warm-up", name)
        runs = {
            "local_many": str(listing),
            "local_one": str(one),
            "s3_many": "s3://bench-detector/many/",
            "s3_one": "s3://bench-detector/one/",
        }
        best: dict[str, float] = {}
        for r in range(args.repeats):
            for run, videos in runs.items():
                seconds, summary = mining_seconds(videos, work, work / f"{name}-{run}-{r}", name)
                seconds -= summary["startup_seconds_this_run"]
                best[run] = min(best.get(run, seconds), seconds)
    finally:
        server.stop()
    out: dict[str, Any] = {f"detector_videos_{name}": args.detector_videos}
    for where in ("local", "s3"):
        o = overhead(best[f"{where}_many"], best[f"{where}_one"], args.detector_videos)
        out[f"{where}_many_s_{name}"] = round(best[f"{where}_many"], 2)
        out[f"{where}_one_s_{name}"] = round(best[f"{where}_one"], 2)
        out[f"per_video_overhead_ms_{where}_{name}"] = round(o["per_video_overhead_ms"], 2)
        out[f"video_cost_ms_{where}_{name}"] = round(o["video_cost_ms"], 2)
        out[f"overhead_ratio_{where}_{name}"] = round(o["ratio"], 3)
    return out


def measure_decoder_floor(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """What one more file costs FFmpeg itself, in this process: PyAV opening and decoding each short
    video (RGB at its size) vs decoding the same number of frames of the long one. No pipeline can go
    below it: with no detection it is the floor of ``per_video_overhead_ms_*``."""
    import av
    from av.video.reformatter import VideoReformatter

    many, one = make_videos(cache, args.videos, args.frames)
    reformatter = VideoReformatter()

    def decode(paths: list[Path]) -> tuple[float, int]:
        t0, n = time.perf_counter(), 0
        for path in paths:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"  # as the reader decodes
                for frame in container.decode(stream):
                    reformatter.reformat(frame, format="rgb24").to_ndarray()
                    n += 1
        return time.perf_counter() - t0, n

    decode(many[:20])  # warm: file cache, codec set-up
    best_many = best_one = float("inf")
    for _ in range(max(1, args.repeats)):
        many_s, n_many = decode(many)
        one_s, n_one = decode([one / "long.mp4"])
        best_many, best_one = min(best_many, many_s), min(best_one, one_s)
    per_video = best_many / len(many) * 1000
    per_frames = best_one / n_one * args.frames * 1000  # the long video's cost for as many frames
    return {
        "pyav_short_video_ms": round(per_video, 3),
        "pyav_frames_of_long_video_ms": round(per_frames, 3),
        "pyav_floor_ms_per_video": round(per_video - per_frames, 3),
    }


class MotoProcess:
    """moto's S3 server in a process of its own on 127.0.0.1 (``python -m moto.server``): it must not share
    this process's GIL (the mining driver runs here), as a real S3 endpoint would not. Its request log
    (``log``) is what :func:`count_requests` reads."""

    def __init__(self, log: Path) -> None:
        import socket
        import subprocess

        self.log = log
        for _ in range(5):  # a free port can be taken between the probe and the server's bind: try again
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            with open(log, "wb") as sink:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            if self._wait(port):
                self.endpoint = f"http://127.0.0.1:{port}"
                return
            self.stop()
        raise RuntimeError(f"moto's server did not start (log: {log})")

    def _wait(self, port: int) -> bool:
        import socket

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                time.sleep(0.1)
        return False

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system): on a small machine it competes
        with the miners, which a remote S3 endpoint would not."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def mark(self) -> int:
        """Where the request log ends now: :func:`count_requests` counts from here."""
        return self.log.stat().st_size

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - a server that ignores SIGTERM is killed
            self.proc.kill()
            self.proc.wait()


_REQUEST = re.compile(rb'"(?:\x1b\[[0-9;]*m)*(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP')


def count_requests(server: MotoProcess, since: int) -> dict[str, int]:
    """Requests the server logged after ``since`` (:meth:`MotoProcess.mark`), by kind: ``GET``
    (object reads), ``LIST`` (listings), ``HEAD``, ``PUT``, ..."""
    with open(server.log, "rb") as f:
        f.seek(since)
        text = f.read()
    counts: dict[str, int] = {}
    for method, target in _REQUEST.findall(text):
        kind = (
            "LIST"
            if method == b"GET" and (b"list-type" in target or target.count(b"/") < 2)
            else method.decode()
        )
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def start_s3(work: Path) -> MotoProcess:
    server = MotoProcess(work / "moto.log")
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=server.endpoint,
    )
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="manifest rows (default 1,000,000)")
    p.add_argument("--videos", type=int, default=2000, help="short videos (default 2000)")
    p.add_argument("--frames", type=int, default=10, help="frames per short video (default 10)")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each overhead measurement, the fastest kept (default 1)",
    )
    p.add_argument("--detector", default="precomputed", choices=["precomputed", "mediapipe"])
    p.add_argument(
        "--with-detector",
        default="mediapipe",
        choices=["mediapipe"],
        help="the detector of the local comparison with detection (see --detector-videos)",
    )
    p.add_argument(
        "--detector-videos",
        type=int,
        default=100,
        help="short videos of the local comparison with --with-detector (0: skip; default 100)",
    )
    p.add_argument("--cache", default="outputs/bench-collection/cache", help="generated inputs, kept")
    p.add_argument("--out", default="outputs/bench-collection/results.json")
    p.add_argument("--skip-overhead", action="store_true", help="only the manifest measurements")
    p.add_argument(
        "--resume-videos", type=int, default=1_000_000, help="finished videos in the resume ledger (0: skip)"
    )
    p.add_argument("--resume-s3-videos", type=int, default=2000, help="the same on the S3 server (0: skip)")
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    results.update(measure_manifest(args.rows, cache))
    print(json.dumps(results, indent=1), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-collection-") as tmp:
        work = Path(tmp)
        if not args.skip_overhead:
            results.update(measure_overhead(args, cache, work))
            results.update(measure_decoder_floor(args, cache))
            results.update(measure_with_detector(args, cache, work))
        for fn in EXTRA_MEASUREMENTS:
            results.update(fn(args, work))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
