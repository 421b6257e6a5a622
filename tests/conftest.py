"""Shared fixtures: the real test data beside the project, and one Ray runtime per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MASKAHAND_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real videos, images, annotations); tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set MASKAHAND_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_session():
    """Start Ray once for the whole session (about 4 s), small object store, both cores."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            num_gpus=0,
            object_store_memory=512 * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


MINED_VIDEOS = ("hands_pillow.mp4", "hands_teddy.mp4", "ego4d_stirring.mp4", "opra_espresso_vp9.mp4")


@pytest.fixture(scope="session")
def mined_clip_shards(shared_data, ray_session, tmp_path_factory) -> Path:
    """A ``maskahand mine`` output of four real shared videos (mediapipe backend, frames at most 256 px).

    Mined once per session. Returns the output folder: clip shards in ``OUT/shards/*.tar``, one row per
    clip in ``OUT/manifest.jsonl``, per-frame detections in ``OUT/parts/*.frames.jsonl``.
    """
    from maskahand.core.config import MineRecipe
    from maskahand.core.configbase import apply_overrides
    from maskahand.mine.pipeline import mine

    videos = tmp_path_factory.mktemp("mine_inputs")
    for name in MINED_VIDEOS:
        (videos / name).symlink_to(shared_data / "videos" / name)
    out = tmp_path_factory.mktemp("mined") / "out"
    recipe = apply_overrides(MineRecipe(), ["detector.backend=mediapipe", "mine.frame_max_side=256"])
    mine(recipe, str(videos), out, progress=False)
    return out


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread for a module: on a shared 2-core CPU, intra-op threads spin against other processes."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- object storage: a real S3-compatible server (moto) on 127.0.0.1 ---------------------------------

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "maskahand-test",
    "AWS_SECRET_ACCESS_KEY": "maskahand-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free loopback port for the whole session; the standard ``AWS_*`` variables
    (``AWS_ENDPOINT_URL`` included) point this process and its children at it. Yields the endpoint."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is in requirements/dev.txt")
    pytest.importorskip("s3fs", reason="s3fs is in requirements/base.txt")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in (*S3_ENV, "AWS_ENDPOINT_URL")}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
    yield endpoint
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, request) -> str:
    """A new, empty bucket on the session's S3 server; returns ``s3://NAME``."""
    import re
    import uuid

    import boto3

    stem = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"
