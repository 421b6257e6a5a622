"""Decode-rate benchmark of the video backends on one file: ``python -m benchmarks.video PATH``.

Backends run alternately, ``--repeats`` times each, in one process with one torch thread, so that the
ratio between them holds even when the machine is busy; the best run of each is reported.
"""

from __future__ import annotations

import argparse
import time


def measure(path: str, backend: str, fps: float, max_side: int | None) -> tuple[int, int, float, str]:
    from maskahand.core.config import VideoConfig
    from maskahand.video import open_video

    start = time.perf_counter()
    reader = open_video(path, VideoConfig(backend=backend, fps=fps, max_side=max_side))
    returned = sum(1 for _ in reader)
    return returned, reader.stats.frames_decoded, time.perf_counter() - start, reader.stats.backend_used


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--fps", type=float, nargs="+", default=[1000.0, 5.0], help="1000: every frame")
    parser.add_argument("--max-side", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    for fps in args.fps:
        best: dict[str, tuple[int, int, float, str]] = {}
        for _ in range(args.repeats):
            for backend in ("pyav", "decord"):
                result = measure(args.path, backend, fps, args.max_side)
                if backend not in best or result[2] < best[backend][2]:
                    best[backend] = result
        for backend, (returned, decoded, seconds, used) in best.items():
            print(
                f"fps={fps:g} max_side={args.max_side} {backend:6s} (ran {used}): {returned} frames returned, "
                f"{decoded} decoded in {seconds:.3f} s = {decoded / seconds:.0f} decoded frames/s"
            )
        ratio = best["pyav"][2] / best["decord"][2]
        print(f"fps={fps:g}: pyav time / decord time = {ratio:.2f} (>1: decord faster)")


if __name__ == "__main__":
    main()
