"""``mine``'s start-up and resume over a ledger of many finished videos (issue 18's scale figure).

    python -m benchmarks.collection_resume --out outputs/bench-collection-resume [--videos 1000000] [--s3-videos 2000]

Generates, under ``OUT/data``: ``N`` input videos (hard links of a few small files, 1,000 per folder, so that
the resume pays the real ``stat`` of every input), their ``.txt`` list, and a mining output whose
``ledger.jsonl`` holds one finished (``ok``) line per video with its real fingerprint, as ``mine`` writes
them, plus ``config.yaml``. Then it runs the real command, ``maskahand mine --videos LIST --out OUT``, in
a fresh process, twice: the first run rebuilds ``manifest.jsonl`` (the ledger is newer than any manifest),
the second is the steady resume (ledger unchanged since the manifest was built: the rebuild is skipped).
Each run finds every video done and exits before starting Ray. Reported: wall and CPU seconds and peak
RSS of each process (``os.wait4``), from which ``resume_s`` / ``resume_cpu_s`` / ``resume_peak_rss_mb``
are the second run's (the command is single-threaded: on an idle machine wall = CPU seconds; on a
shared one the wall figure includes waiting for a core, see ``resume_load_average``), and the CPU
seconds of its phases (``phase_*``: discovery, ledger read, input checks) from a separate process.

The per-video parts are not generated (the manifest rebuild stats 1M missing parts instead of reading
them); shards are not generated either (a resume never lists them).

With ``--s3-videos M`` (default 2,000; 0: skip) the same is done with the output in a bucket of a local
moto S3 server (the ledger one object, as ``mine`` leaves it after compaction), at that smaller size: a
moto server in this process is far slower per request than a real store, and the figure is for the
shape of the cost, not for production.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PER_FOLDER = 1000


def make_inputs(data: Path, n: int) -> Path:
    """``n`` video files (hard links of one file) in folders of 1,000, and their list; returns the list."""
    listing = data / f"videos-{n}.txt"
    if listing.exists():
        return listing
    videos = data / f"videos-{n}"
    videos.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        # a file per 50,000 links (ext4 allows 65,000), never rewritten: that would change every link's mtime
        seed = data / f"seed-{n}-{i // 50_000}.mp4"
        if not seed.exists():
            seed.write_bytes(b"\0" * 4096)
        folder = videos / f"{i // PER_FOLDER:05d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(exist_ok=True)
        path = folder / f"v{i:07d}.mp4"
        if not path.exists():
            os.link(seed, path)
        lines.append(f"videos-{n}/{path.parent.name}/{path.name}\n")
    tmp = listing.with_suffix(".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(listing)
    return listing


def ledger_lines(listing: Path) -> Any:
    """One ``ok`` ledger line per listed video, as ``mine`` writes it (real fingerprint and shard name)."""
    from maskahand.mine.ledger import VideoRecord, fingerprint, video_stem

    root = listing.parent
    node = {"host": "bench-node", "node_id": "f" * 56}
    for i, line in enumerate(listing.read_text().splitlines()):
        path = root / line
        stem = video_stem(line)
        rec = VideoRecord(
            line,
            str(path),
            "ok",
            frames=300 + i % 50,
            clips=18 + i % 5,
            seconds=12.5,
            duration=60.0,
            shards=[f"{stem}-000000.tar"],
            fingerprint=fingerprint(path),
            finished_at=1.7e9 + i,
            node=node,
        )
        yield json.dumps(rec.to_dict(), sort_keys=True) + "\n"


def write_config(out: str, recipe_args: list[str]) -> None:
    """``out/config.yaml`` as this version's ``mine`` writes it (a kept output is resumed, not refused)."""
    import dataclasses

    from maskahand.core.config import MineRecipe
    from maskahand.core.configbase import apply_overrides, save_config
    from maskahand.mine.rule import mining_video_config

    recipe = apply_overrides(MineRecipe(), recipe_args)
    save_config(dataclasses.replace(recipe, video=mining_video_config(recipe)), out)


def make_output(listing: Path, out: str, recipe_args: list[str]) -> None:
    """``out`` holding config.yaml and a ledger with every video of ``listing`` finished."""
    import tempfile

    from maskahand.core import storage

    write_config(out, recipe_args)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "ledger.jsonl"
        with open(local, "w") as f:
            f.writelines(ledger_lines(listing))
        storage.upload_file(local, storage.join(out, "ledger.jsonl"))


def run_mine(listing: Path, out: str, recipe_args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``maskahand mine`` in a fresh process: its wall seconds, peak RSS and summary line."""
    cmd = [sys.executable, "-m", "maskahand.cli", "mine", "--videos", str(listing), "--out", out]
    cmd += ["--no-progress", *recipe_args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    stdout, stderr = proc.stdout.read().decode(), proc.stderr.read().decode()  # type: ignore[union-attr]
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"mine failed ({status}): {stderr[-2000:]}")
    return {
        "seconds": round(seconds, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),  # = wall on an idle machine (one thread)
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "stdout": stdout,
    }


def phases(listing: str, out: str) -> dict[str, float]:
    """Where a resume's time goes (CPU seconds): discovering the inputs, reading the ledger, checking each
    input against it (a lookup per video; discovery took its fingerprint)."""
    from maskahand.mine.ledger import Ledger
    from maskahand.mine.sources import iter_inputs

    t0 = time.process_time()
    found = list(iter_inputs(listing))  # what `mine` discovers (a .txt list: a stat per line)
    t1 = time.process_time()
    ledger = Ledger(out)
    t2 = time.process_time()
    done = sum(ledger.is_done(t.video_id, t.fingerprint, False) for t in found)
    t3 = time.process_time()
    assert done == len(found), (done, len(found))
    return {
        "phase_discover_cpu_s": round(t1 - t0, 2),
        "phase_ledger_read_cpu_s": round(t2 - t1, 2),
        "phase_check_inputs_cpu_s": round(t3 - t2, 2),
    }


def run_phases(listing: Path, out: str, env: dict[str, str]) -> dict[str, float]:
    cmd = [sys.executable, "-m", "benchmarks.collection_resume", "--phases", str(listing), out]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


RECIPE = ["detector.backend=mediapipe"]  # nothing is detected: every video is done


def bench_resume(out_dir: str | Path, videos: int = 1_000_000, s3_videos: int = 2_000) -> dict[str, Any]:
    """Generate a ledger of ``videos`` finished videos under ``out_dir`` and time ``mine``'s resume over it."""
    out_dir = Path(out_dir)
    data = out_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    listing = make_inputs(data, videos)
    out = data / f"mined-{videos}"
    if not (out / "ledger.jsonl").exists():
        make_output(listing, str(out), RECIPE)
    else:
        write_config(str(out), RECIPE)
    for stale in ("manifest.jsonl", "manifest.state.json"):
        (out / stale).unlink(missing_ok=True)
    generate_s = time.perf_counter() - t0
    first = run_mine(listing, str(out), RECIPE, env)
    second = run_mine(listing, str(out), RECIPE, env)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos_ok"] == videos and summary["nothing_to_do"], summary
    result: dict[str, Any] = {
        "resume_videos": videos,
        "resume_s": second["seconds"],
        "resume_cpu_s": second["cpu_s"],
        "resume_peak_rss_mb": second["peak_rss_mb"],
        "resume_rebuilding_manifest_s": first["seconds"],
        "resume_rebuilding_manifest_cpu_s": first["cpu_s"],
        "resume_rebuilding_manifest_peak_rss_mb": first["peak_rss_mb"],
        "resume_ledger_mb": round((out / "ledger.jsonl").stat().st_size / 2**20, 1),
        "resume_generate_s": round(generate_s, 1),
        "resume_cpus": os.cpu_count(),
        "resume_load_average": round(os.getloadavg()[0], 1),  # other work on the machine inflates wall s
        **run_phases(listing, str(out), env),
    }
    if s3_videos:
        result.update(_bench_s3(data, s3_videos, env))
    return result


def _bench_s3(data: Path, n: int, env: dict[str, str]) -> dict[str, Any]:
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        return {"resume_s3_skipped": "moto[server] not installed (requirements/dev.txt)"}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3_env = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    saved = {k: os.environ.get(k) for k in s3_env}
    os.environ.update(s3_env)
    try:
        boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="bench-resume")
        listing = make_inputs(data, n)
        out = "s3://bench-resume/clips"
        make_output(listing, out, RECIPE)
        first = run_mine(listing, out, RECIPE, env | s3_env)
        second = run_mine(listing, out, RECIPE, env | s3_env)
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {
        "resume_s3_videos": n,
        "resume_s3_s": second["seconds"],
        "resume_s3_cpu_s": second["cpu_s"],
        "resume_s3_peak_rss_mb": second["peak_rss_mb"],
        "resume_s3_rebuilding_manifest_s": first["seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/bench-collection-resume", help="work folder and results.json")
    ap.add_argument("--videos", type=int, default=1_000_000)
    ap.add_argument("--s3-videos", type=int, default=2_000, help="0: no S3 run")
    ap.add_argument("--phases", nargs=2, metavar=("LIST", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.phases:  # (a child process of bench_resume: the time per phase)
        print(json.dumps(phases(*args.phases)))
        return 0
    result = bench_resume(args.out, args.videos, args.s3_videos)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    for clock in ("s", "cpu_s"):
        goal = result[f"resume_{clock}"] <= 20 and result["resume_peak_rss_mb"] <= 1536
        print(f"goal (resume <= 20 s, peak RSS <= 1.5 GB), by {clock}: {'met' if goal else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
