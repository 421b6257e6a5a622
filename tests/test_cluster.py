"""A real two-node Ray cluster on this machine: authentication, mine + synth through --address, node loss.

The cluster (``tests/cluster_util.py``) is a token-protected head and a worker joined with ``ray start
--address``, each a ``ray start --block`` subprocess with one CPU and a 200 MB object store, stopped by
its own process id; the teardown asserts that none of their processes is left. It coexists with the
session's embedded Ray (``ray_session``), which makes the reference outputs: other ports, another temp
dir, another HOME (so the user's ``~/.ray/auth_token`` is neither read nor written).

Placement is forced with resources: each node has one CPU and each miner wants one, so the two miners
land one per node; the detector actor (no CPU) wants the head's custom resource ``mah_head``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster_util import BIN, TOKEN, Cluster

pytestmark = [pytest.mark.slow]

VIDEOS = ("hands_pillow.mp4", "hands_teddy.mp4")
CLUSTER_OVERRIDES = [
    "workers.decoders=2",
    "workers.cpus_per_decoder=1",
    "workers.detector_actors=1",
    "workers.cpus_per_detector=0",
    "mine.frame_max_side=256",
    "mine.fps=10",  # ~70 frames a video: long enough to kill a node mid-video
    "shards.max_samples=4",
]
PLACEMENT = ["workers.detector_resources={mah_head: 1}"]  # only the cluster has this resource


@pytest.fixture(scope="module")
def cluster():
    # Health checks slow enough (a dead node is declared after about 6 s) that a killed node's miner always
    # fails before the GCS knows the node is gone, as on a real cluster (Ray's defaults take longer still).
    c = Cluster(health_check_ms=2000)
    try:
        c.start_head({"mah_head": 1})
        c.start_worker({"mah_worker": 1})
        c.nodes_info = c.wait_nodes(2)
        yield c
    finally:
        left = c.stop()
        assert not left, f"cluster processes left behind: {left}"


@pytest.fixture(scope="module")
def inputs(shared_data, tmp_path_factory):
    """Two real videos and precomputed detections for every frame (an interacting hand in some frames)."""
    import av

    root = tmp_path_factory.mktemp("cluster_inputs")
    videos = root / "videos"
    videos.mkdir()
    lines = []
    for name in VIDEOS:
        (videos / name).symlink_to(shared_data / "videos" / name)
        with av.open(str(shared_data / "videos" / name)) as c:
            s = c.streams.video[0]
            w, h, n = s.width, s.height, s.frames
        for frame in range(1, n + 40):
            hit = frame % 60 < 30
            hands = (
                [{"box": [w * 0.3, h * 0.3, w * 0.6, h * 0.7], "state": "contact", "score": 1.0}]
                if hit
                else []
            )
            lines.append(json.dumps({"video": name, "frame": frame, "width": w, "height": h, "hands": hands}))
    detections = root / "detections.jsonl"
    detections.write_text("\n".join(lines) + "\n")
    return videos, detections


def maskahand(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "maskahand"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def mine_args(inputs, out: Path, address: str, extra: list[str]) -> list[str]:
    videos, detections = inputs
    return [
        "mine", "--videos", str(videos), "--out", str(out), "--address", address,
        "--detector", "precomputed", "--detections", str(detections), "--no-progress",
        *CLUSTER_OVERRIDES, *PLACEMENT, *extra,
    ]  # fmt: skip


def embedded_mine(inputs, out: Path, extra: list[str]) -> Path:
    from maskahand.core.config import MineRecipe
    from maskahand.core.configbase import apply_overrides
    from maskahand.mine.pipeline import mine

    videos, detections = inputs
    recipe = apply_overrides(
        MineRecipe(),
        [
            "detector.backend=precomputed",
            f"detector.precomputed.path={detections}",
            *CLUSTER_OVERRIDES,
            *extra,
        ],
    )
    mine(recipe, str(videos), out, progress=False)
    return out


@pytest.fixture(scope="module")
def embedded_clips(inputs, ray_session, tmp_path_factory) -> Path:
    """The reference: the same mining run on the session's embedded Ray (no cluster resources)."""
    return embedded_mine(inputs, tmp_path_factory.mktemp("embedded") / "clips", [])


def tar_bytes(folder: Path) -> dict[str, bytes]:
    tars = {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}
    assert tars, f"no shards in {folder}"
    return tars


def ledger(out: Path, name: str = "ledger.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines() if line.strip()]


def ledger_rows(out: Path) -> list[dict]:
    """The ledger lines written so far (none yet, or a torn last line, while a run is going)."""
    try:
        lines = (out / "ledger.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def cluster_node_ids(c: Cluster) -> dict[str, str]:
    """{"head" | "worker": node id}, told apart by their custom resources."""
    return {("head" if "mah_head" in n["Resources"] else "worker"): n["NodeID"] for n in c.nodes_info}


# -- authentication ----------------------------------------------------------------------------------


AUTH_CASES = r"""
import json, os, sys, time
from maskahand.core.config import RayConfig
from maskahand.core.rayutil import RayConnectError, configure_auth, init_ray

address, cases = sys.argv[1], json.loads(sys.argv[2])
results = []
for case in cases:
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        os.environ.pop(key, None)
    os.environ.update(case["env"])
    t0 = time.monotonic()
    try:
        out = {"mode": configure_auth(address)}
        if case.get("connect"):
            out["resources"] = init_ray(RayConfig(address=address))
            import ray  # an actor must run: a driver in the wrong mode connects, but its actors never start

            class Probe:
                def ping(self):
                    return "ran"

            out["task"] = ray.get(ray.remote(num_cpus=0)(Probe).remote().ping.remote(), timeout=60)
    except RayConnectError as e:
        out = {"error": str(e)}
    out["seconds"] = time.monotonic() - t0
    results.append(out)
print(json.dumps(results))
"""


def auth_cases(address: str, env: dict[str, str], cases: list[dict]) -> list[dict]:
    """Run ``configure_auth`` (and ``init_ray`` where ``connect``) in one fresh process, once per case."""
    r = subprocess.run(
        [sys.executable, "-c", AUTH_CASES, address, json.dumps(cases)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_auth_token_where_ray_keeps_it_or_a_quick_error_naming_the_variables(cluster, inputs, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(TOKEN)
    wrong, missing, by_env, by_path, by_home = auth_cases(
        cluster.address,
        cluster.env,  # an empty HOME, no token anywhere, no RAY_AUTH_MODE
        [
            {"env": {"RAY_AUTH_TOKEN": "not-the-token"}},
            {"env": {}},
            {"env": {"RAY_AUTH_TOKEN": TOKEN}},
            {"env": {"RAY_AUTH_TOKEN_PATH": str(token_file)}},
            {"env": {"HOME": str(home)}, "connect": True},
        ],
    )
    for result in (wrong, missing):
        assert "error" in result, result
        assert result["seconds"] < 6, result  # Ray alone retries for ~20 s, then raises ConnectionError
        for where in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token"):
            assert where in result["error"], result
    assert "rejected" in wrong["error"] and "none was found" in missing["error"]
    assert by_env["mode"] == by_path["mode"] == by_home["mode"] == "token", (by_env, by_path, by_home)
    assert by_home["resources"].get("mah_head") == 1 and by_home["resources"].get("mah_worker") == 1
    assert by_home["task"] == "ran"
    # the command says it in one line, exit status 2 (fix the setup), no traceback, no retry log
    r = maskahand(["mine", "--videos", str(inputs[0]), "--out", str(tmp_path / "o"), "--address",
                   cluster.address], cluster.client_env(RAY_AUTH_TOKEN="not-the-token"), timeout=120)  # fmt: skip
    assert r.returncode == 2, r.stderr[-3000:]
    assert "rejected this machine's authentication token" in r.stderr, r.stderr[-3000:]
    assert "InvalidAuthToken" not in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(r.stderr.strip().splitlines()) <= 2, r.stderr[-3000:]


def test_auth_cluster_without_authentication():
    """A token on this machine (even RAY_AUTH_MODE=token) must not break a cluster without authentication."""
    c = Cluster(token=None)
    try:
        c.start_head({"mah_open": 1})
        c.wait_nodes(1)
        [result] = auth_cases(c.address, c.env, [{"env": {"RAY_AUTH_TOKEN": TOKEN, "RAY_AUTH_MODE": "token"},
                                                  "connect": True}])  # fmt: skip
        assert result["mode"] == "disabled" and result["resources"].get("mah_open") == 1, result
        assert result["task"] == "ran", result
    finally:
        left = c.stop()
        assert not left, f"cluster processes left behind: {left}"


# -- mine and synth on two nodes ------------------------------------------------------------------------


def test_two_nodes_mine_and_synth_match_embedded_runs(cluster, inputs, embedded_clips, tmp_path):
    ids = cluster_node_ids(cluster)
    assert set(ids) == {"head", "worker"}
    out = tmp_path / "cluster-clips"
    r = maskahand(mine_args(inputs, out, cluster.address, []), cluster.client_env())
    assert r.returncode == 0, r.stderr[-4000:]
    ref = embedded_clips
    assert tar_bytes(out / "shards") == tar_bytes(ref / "shards")
    assert (out / "manifest.jsonl").read_bytes() == (ref / "manifest.jsonl").read_bytes()
    for stem in {p.name for p in (ref / "parts").iterdir()}:
        assert (out / "parts" / stem).read_bytes() == (ref / "parts" / stem).read_bytes()
    rows = ledger(out)
    assert [x["status"] for x in rows] == ["ok", "ok"]
    assert {x["node"]["node_id"] for x in rows} == set(ids.values()), rows  # one video on each node
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["videos_per_node"].values()) == [1, 1]

    synth_out = tmp_path / "cluster-synth"
    overrides = ["synth.variants=2", "synth.batch_size=8", "cpus_per_worker=1"]
    r = maskahand(
        ["synth", "--clips", str(out), "--out", str(synth_out), "--address", cluster.address, "--no-progress",
         *overrides],
        cluster.client_env(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-4000:]
    from maskahand.core.config import SynthRecipe
    from maskahand.core.configbase import apply_overrides
    from maskahand.synth.pipeline import run_synth

    synth_ref = tmp_path / "embedded-synth"
    run_synth(ref, synth_ref, apply_overrides(SynthRecipe(), overrides), progress=False)
    assert tar_bytes(synth_out) == tar_bytes(synth_ref)
    nodes = {x["node"]["node_id"] for x in ledger(synth_out, "synth_ledger.jsonl")}
    assert nodes == set(ids.values())  # shards were synthesized on both nodes


def test_two_nodes_mine_and_synth_into_a_bucket_without_a_shared_mount(
    cluster, inputs, embedded_clips, s3_bucket, tmp_path
):
    """``--out s3://...`` on a two-node cluster whose nodes were started before the S3 variables existed:
    each miner stages on its own node's disk and uploads (no shared output folder); the shards equal the
    embedded local run's, and synth from and to the bucket runs on both nodes too."""
    import os

    from maskahand.core import storage
    from tests.test_object_storage_outputs import objects

    ids = cluster_node_ids(cluster)
    s3_env = {k: os.environ[k] for k in storage.ENV_VARS if k in os.environ}  # the driver's only
    out = f"{s3_bucket}/clips"
    # the miner on the worker node, the detector on the head (PLACEMENT): every upload comes from a node
    # that is not the driver's, whatever the timing (runtime settings only: the same output)
    on_worker = ["workers.decoders=1", "workers.decoder_resources={mah_worker: 1}"]
    args = mine_args(inputs, tmp_path / "unused", cluster.address, on_worker)
    args[args.index("--out") + 1] = out
    r = maskahand(args, cluster.client_env(**s3_env))
    assert r.returncode == 0, r.stderr[-4000:]
    assert not (tmp_path / "unused").exists()  # nothing written to a local output path
    got = objects(out)
    ref = embedded_clips
    assert {k: v for k, v in got.items() if k.startswith("shards/") and k.endswith(".tar")} == {
        f"shards/{name}": data for name, data in tar_bytes(ref / "shards").items()
    }
    assert got["manifest.jsonl"] == (ref / "manifest.jsonl").read_bytes()
    rows = [json.loads(line) for line in got["ledger.jsonl"].decode().splitlines()]
    assert {x["node"]["node_id"] for x in rows} == {ids["worker"]}, rows  # mined and uploaded there

    synth = f"{s3_bucket}/synth"
    overrides = [
        "synth.variants=2",
        "synth.batch_size=8",
        "cpus_per_worker=1",
        "worker_resources={mah_worker: 1}",
    ]
    r = maskahand(
        ["synth", "--clips", out, "--out", synth, "--address", cluster.address, "--no-progress", *overrides],
        cluster.client_env(**s3_env),
    )
    assert r.returncode == 0, r.stderr[-4000:]
    entries = [json.loads(b) for k, b in objects(synth).items() if k.startswith("synth_ledger.d/")]
    assert {x["node"]["node_id"] for x in entries} == {ids["worker"]}  # synthesized and uploaded there


# Kills the worker node: the module's last test (the cluster fixture has one node after it).
def test_node_lost_mid_run_finishes_on_the_survivor(cluster, inputs, embedded_clips, tmp_path):
    """SIGKILL every process of the worker node while both nodes mine: the head redoes the lost video."""
    slow = ["detector.batch_size=1", "workers.max_inflight_batches=1"]  # runtime only: same output
    ids = cluster_node_ids(cluster)
    worker = next(n for n in cluster.nodes if n.name.startswith("worker"))
    out = tmp_path / "lost"
    args = mine_args(inputs, out, cluster.address, slow)
    proc = subprocess.Popen([str(BIN / "maskahand"), *args], env=cluster.client_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        # Kill when the worker's miner holds a video: it has run one of its methods (Ray puts the running
        # method in the process title) and no ledger line says the worker finished one.
        deadline = time.monotonic() + 180
        busy = False
        while time.monotonic() < deadline and proc.poll() is None and not busy:
            busy = any(
                t.startswith("ray::VideoMiner.") and not t.startswith("ray::VideoMiner.__init__")
                for t in worker.titles()
            ) and not any(x.get("node", {}).get("node_id") == ids["worker"] for x in ledger_rows(out))
            time.sleep(0.02)
        assert busy, f"the worker never held a video before the run ended: {proc.communicate()}"
        killed = worker.kill()
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(killed) > 3 and worker.proc.poll() is not None  # ray start, raylet, agents, workers
    assert proc.returncode == 0, stderr[-4000:]
    assert stderr.count("lost with its miner's node") == 1, stderr[-4000:]
    rows = ledger(out)
    assert sorted(x["status"] for x in rows) == ["ok", "ok"], rows  # nothing failed, nothing twice
    assert {x["node"]["node_id"] for x in rows} == {ids["head"]}
    ref = embedded_clips  # uninterrupted
    assert tar_bytes(out / "shards") == tar_bytes(ref / "shards")
    assert (out / "manifest.jsonl").read_bytes() == (ref / "manifest.jsonl").read_bytes()
    assert not (out / ".staging").exists() or not any((out / ".staging").iterdir())
    # a rerun has nothing to do
    r = maskahand(mine_args(inputs, out, cluster.address, slow), cluster.client_env())
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stderr[-3000:]
