"""Per-video cost of the video reader: many 10-frame videos vs 10 frames of one long video, in-process.

``python -m benchmarks.video_overhead [--cache DIR] [--videos 300] [--threads N] [--work DIR] [--out JSON]``

The same videos as ``make bench-collection`` (160x120 H.264, encoded into ``--cache`` unless there; a
tar of them is written into ``--work``).
Each mode reads the short videos one by one and the long video once; the per-video overhead is a short
video's cost minus 10 frames' cost of the long one. Modes: ``pyav`` (plain PyAV: ``av.open``, decode,
``to_ndarray`` per frame: the container's own floor), ``reader`` (``open_video`` + ``batches(8)``, as a
miner reads), ``reader_tar`` (the same from a tar of the short videos, through ``StreamSource``).
Modes run alternately, ``--repeats`` times; the median is reported, in CPU time of this process (its
decoder threads included; steady on a shared machine) and wall time. Machine-dependent: compare the
ratios, and code versions only within one run or one machine (``PYTHONPATH=DIR`` with an older
checkout in ``DIR/maskahand`` measures that version's reader with this script).
"""

from __future__ import annotations

import argparse
import statistics
import tarfile
import time
from pathlib import Path
from typing import Any

from benchmarks.collection import make_videos

BATCH = 8  # the miner's detector batch


def read_plain(path: str) -> int:
    import av

    with av.open(path) as container:
        frames = 0
        for frame in container.decode(video=0):
            frame.to_ndarray(format="rgb24")
            frames += 1
    return frames


def read_with_reader(target: Any, cfg: Any) -> int:
    from maskahand.video import open_video

    reader = open_video(target, cfg)
    frames = sum(len(batch) for batch in reader.batches(BATCH))
    getattr(reader, "close", lambda: None)()  # older readers have no close()
    return frames


def read_member(member: Any, cfg: Any) -> int:
    from maskahand.video.source import StreamSource

    source = StreamSource(member)
    try:
        return read_with_reader(source, cfg)
    finally:
        source.close()


def timed(fn: Any, items: list[Any]) -> tuple[float, float, int]:
    cpu, wall = time.process_time(), time.perf_counter()
    frames = sum(fn(item) for item in items)
    return time.process_time() - cpu, time.perf_counter() - wall, frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("outputs/bench-collection/cache"))
    parser.add_argument("--videos", type=int, default=300, help="short videos read per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="video.threads (0: the decoder's default)")
    parser.add_argument("--work", type=Path, default=Path("outputs/bench-video-overhead"), help="the tar")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from maskahand.core.config import MineRecipe
    from maskahand.core.configbase import apply_overrides
    from maskahand.core.fsutil import atomic_write_json
    from maskahand.mine.rule import mining_video_config
    from maskahand.video.source import VideoInput

    torch.set_num_threads(1)
    shorts, long_dir = make_videos(args.cache, 400, 10)  # the cache bench-collection makes (400 x 10 frames)
    shorts = shorts[: args.videos]
    long_video = str(long_dir / "long.mp4")
    overrides = ["mine.frame_max_side=160", f"video.threads={args.threads}"]
    cfg = mining_video_config(apply_overrides(MineRecipe(), overrides))
    args.work.mkdir(parents=True, exist_ok=True)
    tar = args.work / f"short-10f-{len(shorts)}.tar"
    if not tar.exists():
        partial = tar.with_name(f".{tar.name}.partial")
        with tarfile.open(partial, "w") as archive:
            for path in shorts:
                archive.add(path, arcname=path.name)
        partial.replace(tar)
    with tarfile.open(tar) as archive:
        members = [VideoInput(str(tar), m.offset_data, m.size, m.name) for m in archive.getmembers()]

    modes = {
        "pyav": (lambda p: read_plain(str(p)), shorts, lambda p: read_plain(p)),
        "reader": (lambda p: read_with_reader(p, cfg), shorts, lambda p: read_with_reader(p, cfg)),
        "reader_tar": (lambda m: read_member(m, cfg), members, None),
    }
    runs: dict[str, dict[str, list[float]]] = {m: {} for m in modes}
    read_with_reader(long_video, cfg)  # warm-up: imports, codec tables
    for _ in range(args.repeats):
        for mode, (short_fn, items, long_fn) in modes.items():
            cpu, wall, frames = timed(short_fn, items)
            runs[mode].setdefault("short_cpu_ms", []).append(cpu / len(items) * 1000)
            runs[mode].setdefault("short_wall_ms", []).append(wall / len(items) * 1000)
            if long_fn is not None:
                cpu, wall, frames = timed(long_fn, [long_video])
                runs[mode].setdefault("long10_cpu_ms", []).append(cpu / frames * 10 * 1000)
                runs[mode].setdefault("long10_wall_ms", []).append(wall / frames * 10 * 1000)
    results: dict[str, Any] = {"videos": len(shorts), "repeats": args.repeats, "threads": args.threads}
    for mode, values in runs.items():
        med = {k: statistics.median(v) for k, v in values.items()}
        long_mode = "reader" if mode == "reader_tar" else mode
        for clock in ("cpu", "wall"):
            long10 = statistics.median(runs[long_mode][f"long10_{clock}_ms"])
            short = med[f"short_{clock}_ms"]
            results[f"{mode}_short_{clock}_ms"] = round(short, 3)
            results[f"{mode}_long10_{clock}_ms"] = round(long10, 3)
            results[f"{mode}_overhead_{clock}_ms"] = round(short - long10, 3)
            results[f"{mode}_overhead_ratio_{clock}"] = round((short - long10) / long10, 3)
    for mode in modes:
        print(
            f"{mode:10s} short video {results[f'{mode}_short_cpu_ms']:.2f} ms cpu "
            f"({results[f'{mode}_short_wall_ms']:.2f} wall); 10 frames of the long one "
            f"{results[f'{mode}_long10_cpu_ms']:.2f} ms cpu; overhead per video "
            f"{results[f'{mode}_overhead_cpu_ms']:.2f} ms cpu ({results[f'{mode}_overhead_wall_ms']:.2f} wall), "
            f"ratio {results[f'{mode}_overhead_ratio_cpu']:.2f}"
        )
    if args.out:
        atomic_write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
