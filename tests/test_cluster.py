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
    "shards.max_samples=4",
]
PLACEMENT = ["workers.detector_resources={mah_head: 1}"]  # only the cluster has this resource


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
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
    from maskahand.config import MineRecipe
    from maskahand.configbase import apply_overrides
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


def tar_bytes(folder: Path) -> dict[str, bytes]:
    tars = {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}
    assert tars, f"no shards in {folder}"
    return tars


def ledger(out: Path, name: str = "ledger.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines() if line.strip()]


def cluster_node_ids(c: Cluster) -> dict[str, str]:
    """{"head" | "worker": node id}, told apart by their custom resources."""
    return {("head" if "mah_head" in n["Resources"] else "worker"): n["NodeID"] for n in c.nodes_info}


# -- authentication ----------------------------------------------------------------------------------


def connect(address: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``init_ray(address)`` in a fresh process; prints the cluster's resources or the error, with the seconds."""
    code = f"""
import json, time
from maskahand.config import RayConfig
from maskahand.rayutil import RayConnectError, init_ray
t0 = time.monotonic()
try:
    out = {{"resources": init_ray(RayConfig(address={address!r}))}}
except RayConnectError as e:
    out = {{"error": str(e)}}
out["seconds"] = time.monotonic() - t0
print(json.dumps(out))
"""
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def connected(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_auth_wrong_or_missing_token_fails_in_seconds_naming_the_variables(cluster, inputs, tmp_path):
    for env in (cluster.client_env(RAY_AUTH_TOKEN="not-the-token"), dict(cluster.env)):
        result = connected(connect(cluster.address, env))
        assert "error" in result, result
        assert result["seconds"] < 6, result  # Ray alone retries for ~20 s, then raises ConnectionError
        for where in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token"):
            assert where in result["error"], result
    # the command says it in one line, exit status 2 (fix the setup), no traceback, no retry log
    r = maskahand(["mine", "--videos", str(inputs[0]), "--out", str(tmp_path / "o"), "--address",
                   cluster.address], cluster.client_env(RAY_AUTH_TOKEN="not-the-token"), timeout=120)  # fmt: skip
    assert r.returncode == 2, r.stderr[-3000:]
    assert "rejected this machine's authentication token" in r.stderr, r.stderr[-3000:]
    assert "InvalidAuthToken" not in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(r.stderr.strip().splitlines()) <= 2, r.stderr[-3000:]


def test_auth_token_found_where_ray_keeps_it(cluster, tmp_path):
    """RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token each connect, with no RAY_AUTH_MODE."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(TOKEN)
    for env in (
        cluster.client_env(),
        dict(cluster.env, RAY_AUTH_TOKEN_PATH=str(token_file)),
        dict(cluster.env, HOME=str(home)),
    ):
        assert "RAY_AUTH_MODE" not in env
        resources = connected(connect(cluster.address, env))["resources"]
        assert resources.get("mah_head") == 1 and resources.get("mah_worker") == 1, resources


def test_auth_cluster_without_authentication(tmp_path):
    """A token on this machine (even RAY_AUTH_MODE=token) must not break a cluster without authentication."""
    c = Cluster(token=None)
    try:
        c.start_head({"mah_open": 1})
        c.wait_nodes(1)
        result = connected(connect(c.address, c.client_env(RAY_AUTH_TOKEN=TOKEN, RAY_AUTH_MODE="token")))
        assert result["resources"].get("mah_open") == 1, result
    finally:
        left = c.stop()
        assert not left, f"cluster processes left behind: {left}"


# -- mine and synth on two nodes ------------------------------------------------------------------------


def test_two_nodes_mine_and_synth_match_embedded_runs(cluster, inputs, ray_session, tmp_path):
    ids = cluster_node_ids(cluster)
    assert set(ids) == {"head", "worker"}
    out = tmp_path / "cluster-clips"
    r = maskahand(mine_args(inputs, out, cluster.address, []), cluster.client_env())
    assert r.returncode == 0, r.stderr[-4000:]
    ref = embedded_mine(inputs, tmp_path / "embedded-clips", [])
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
    from maskahand.config import SynthRecipe
    from maskahand.configbase import apply_overrides
    from maskahand.synth.pipeline import run_synth

    synth_ref = tmp_path / "embedded-synth"
    run_synth(ref, synth_ref, apply_overrides(SynthRecipe(), overrides), progress=False)
    assert tar_bytes(synth_out) == tar_bytes(synth_ref)
    nodes = {x["node"]["node_id"] for x in ledger(synth_out, "synth_ledger.jsonl")}
    assert nodes == set(ids.values())  # shards were synthesized on both nodes


def test_node_lost_mid_run_finishes_on_the_survivor(cluster, inputs, ray_session, tmp_path):
    """SIGKILL every process of the worker node while both nodes mine: the head redoes the lost video."""
    slow = ["mine.fps=20", "detector.batch_size=2", "workers.max_inflight_batches=1"]
    ids = cluster_node_ids(cluster)
    worker = next(n for n in cluster.nodes if n.name.startswith("worker"))
    out = tmp_path / "lost"
    args = mine_args(inputs, out, cluster.address, slow)
    proc = subprocess.Popen([str(BIN / "maskahand"), *args], env=cluster.client_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        # Both videos are being mined (each has its staging folder, none is finished): the worker holds one.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            staged = list((out / ".staging").glob("*/*.frames.jsonl")) if (out / ".staging").is_dir() else []
            if len(staged) == 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before both videos were in progress: {proc.communicate()}"
        assert not (out / "ledger.jsonl").exists(), "a video finished before the node was killed"
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
    ref = embedded_mine(inputs, tmp_path / "uninterrupted", slow)
    assert tar_bytes(out / "shards") == tar_bytes(ref / "shards")
    assert (out / "manifest.jsonl").read_bytes() == (ref / "manifest.jsonl").read_bytes()
    assert not (out / ".staging").exists() or not any((out / ".staging").iterdir())
    # a rerun has nothing to do
    r = maskahand(mine_args(inputs, out, cluster.address, slow), cluster.client_env())
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stderr[-3000:]
