"""maskahand.core.storage against a real S3-compatible server (moto) and the local filesystem."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from maskahand.core import storage
from maskahand.core.config import MineRecipe
from maskahand.core.configbase import apply_overrides, dump_config, save_config


def test_url_or_local_path():
    assert storage.is_url("s3://b/k") and storage.is_url("gs://b/k") and storage.is_url("https://h/v.mp4")
    assert not storage.is_url("videos/a.mp4") and not storage.is_url("file:///tmp/a.mp4")
    assert str(storage.local_path("file:///tmp/a.mp4")) == "/tmp/a.mp4"
    assert storage.protocol("s3a://b/k") == "s3" and storage.protocol("gcs://b") == "gs"
    assert storage.join("s3://b/out/", "shards", "x.tar") == "s3://b/out/shards/x.tar"
    assert (
        storage.name_of("s3://b/out/x.tar") == "x.tar" and storage.parent("s3://b/out/x.tar") == "s3://b/out"
    )


def test_redact_drops_user_info_and_signed_query():
    url = "https://user:hunter2@example.org:8443/v.mp4?X-Amz-Signature=abc&X-Amz-Credential=AKIA"
    out = storage.redact(url)
    assert out == "https://example.org:8443/v.mp4"
    assert "hunter2" not in str(storage.StorageError(url, "boom"))


def test_write_list_read_remove_on_s3(s3_bucket, tmp_path):
    url = storage.join(s3_bucket, "out", "a.bin")
    storage.put_bytes(url, b"hello")
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(300_000))
    storage.upload_file(local, storage.join(s3_bucket, "out", "sub", "big.bin"))
    assert storage.read_bytes(url) == b"hello"
    assert storage.read_bytes(storage.join(s3_bucket, "out", "sub", "big.bin")) == local.read_bytes()
    assert storage.listdir(storage.join(s3_bucket, "out")) == [
        f"{s3_bucket}/out/a.bin",
        f"{s3_bucket}/out/sub",
    ]
    assert list(storage.walk_files(storage.join(s3_bucket, "out"))) == [
        f"{s3_bucket}/out/a.bin",
        f"{s3_bucket}/out/sub/big.bin",
    ]
    assert storage.glob(f"{s3_bucket}/out/*/*.bin") == [f"{s3_bucket}/out/sub/big.bin"]
    assert storage.info(url)["size"] == 5 and storage.info(url).get("etag")
    storage.remove([url, storage.join(s3_bucket, "out", "never-there")])
    assert not storage.exists(url)


def test_a_new_object_is_seen_although_the_listing_was_cached(s3_bucket):
    # another process (here: boto3 directly) writes after s3fs listed the prefix
    import boto3

    storage.put_bytes(storage.join(s3_bucket, "p", "1"), b"1")
    assert len(storage.listdir(storage.join(s3_bucket, "p"))) == 1
    boto3.client("s3").put_object(Bucket=s3_bucket[5:], Key="p/2", Body=b"2")
    assert len(storage.listdir(storage.join(s3_bucket, "p"))) == 2
    assert storage.exists(storage.join(s3_bucket, "p", "2"))


def test_typed_errors_name_the_url(s3_bucket, s3_server):
    missing = storage.join(s3_bucket, "no", "such.mp4")
    with pytest.raises(storage.ObjectNotFoundError, match="no/such.mp4"):
        storage.read_bytes(missing)
    with pytest.raises(storage.BucketNotFoundError, match="s3://no-such-bucket-maskahand"):
        storage.read_bytes("s3://no-such-bucket-maskahand/a.mp4")
    with pytest.raises(storage.StorageOptionsError, match="nosuchproto"):
        storage.filesystem("nosuchproto://x/y")


def test_access_denied_from_the_store_is_a_permission_error():
    from botocore.exceptions import ClientError

    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "GetObject")
    err = storage.classify_error(PermissionError(str(denied)), "s3://b/k")
    assert isinstance(err, storage.StoragePermissionError) and err.url == "s3://b/k"
    err = storage.classify_error(denied, "s3://b/k")
    assert isinstance(err, storage.StoragePermissionError)


def test_unreachable_endpoint_is_typed(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    storage.configure(
        {
            "s3": {
                "endpoint_url": f"http://127.0.0.1:{port}",
                "skip_instance_cache": True,
                "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
            }
        }
    )
    try:
        with pytest.raises(storage.StorageUnreachableError, match="s3://bucket/a"):
            storage.read_bytes("s3://bucket/a")
    finally:
        storage.configure(None)


def test_storage_options_per_protocol_and_flat():
    storage.configure({"s3": {"anon": True}})
    try:
        assert storage.options_for("s3")["anon"] is True and "anon" not in storage.options_for("gs")
        storage.configure({"token": "x"})
        assert storage.options_for("gs")["token"] == "x" and storage.options_for("s3")["token"] == "x"
    finally:
        storage.configure(None)
    assert storage.options_for("gs") == {}


def test_storage_options_are_never_printed_nor_saved(tmp_path):
    recipe = apply_overrides(MineRecipe(), ["storage.options={s3: {secret: TOPSECRET, key: AKIAXYZ}}"])
    assert recipe.storage.options["s3"]["secret"] == "TOPSECRET"
    assert "TOPSECRET" not in dump_config(recipe) and "AKIAXYZ" not in dump_config(recipe)
    save_config(recipe, tmp_path)
    assert "TOPSECRET" not in (tmp_path / "config.yaml").read_text()
    out = subprocess.run(
        [sys.executable, "-m", "maskahand.cli", "config", "mine", "storage.options={key: TOPSECRET}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "TOPSECRET" not in out.stdout + out.stderr and "storage" in out.stdout


def test_worker_env_carries_the_standard_variables(s3_server, monkeypatch):
    env = storage.worker_env()
    assert env["AWS_ENDPOINT_URL"] == s3_server and "AWS_SECRET_ACCESS_KEY" in env
    assert all(k.startswith(("AWS_", "GOOGLE_")) for k in env)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    storage.setup_worker({"s3": {"anon": False}}, env)
    try:
        assert os.environ["AWS_ENDPOINT_URL"] == s3_server
        assert storage.options_for("s3") == {"endpoint_url": s3_server, "anon": False}
    finally:
        storage.configure(None)


def test_local_paths_keep_plain_files(tmp_path):
    target = tmp_path / "d" / "x.bin"
    storage.put_bytes(str(target), b"abc")
    src = tmp_path / "src.bin"
    src.write_bytes(b"0123")
    storage.upload_file(src, f"file://{tmp_path}/e/y.bin")
    assert target.read_bytes() == b"abc" and (tmp_path / "e" / "y.bin").read_bytes() == b"0123"
    assert [p for p in os.listdir(tmp_path / "e")] == ["y.bin"]  # no temporary left behind
    assert storage.info(str(target))["size"] == 3
