"""maskahand.runtime: the one rank/world question (process group, else torchrun's environment), the one
directory fsync, the one atomic torch writer."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maskahand.core.fsutil import atomic_path, fsync_dir
from maskahand.runtime.atomic import save_torch_atomic
from maskahand.runtime.distributed import is_main, rank_world
from maskahand.shards.reader import rank_and_world

TORCHRUN = str(Path(sys.executable).parent / "torchrun")

# A process group made from a file store, as a test harness (not torchrun) would; the environment says
# something else on purpose (rank 0 of 1): the group must win while it is up, the environment after.
GROUP_SCRIPT = """
import json, os, sys
import torch.distributed as dist
from maskahand.runtime import distributed as D

rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rec = {"before": D.rank_world(), "main_before": D.is_main()}
dist.init_process_group("gloo", store=dist.FileStore(store, 2), rank=rank, world_size=2)
try:
    rec["during"] = D.rank_world()
    rec["main_during"] = D.is_main()
    rec["gathered"] = D.all_gather_object(rank * 10 + 1)
    dist.barrier()
finally:
    dist.destroy_process_group()
rec["after"] = D.rank_world()
with open(out.format(rank), "w") as f:
    json.dump(rec, f)
"""

# Under torchrun: before init_distributed (hotspots train logs there), inside the group, and after
# shutdown_distributed (detector train/eval print their result there).
TORCHRUN_SCRIPT = """
import json, os, sys
from maskahand.runtime import distributed as D

rec = {"env": [os.environ["RANK"], os.environ["WORLD_SIZE"]]}
rec["before"], rec["main_before"] = D.rank_world(), D.is_main()
info = D.init_distributed("cpu")
rec["initialised"] = D.is_initialized()
rec["during"], rec["main_during"] = D.rank_world(), D.is_main()
rec["gathered"] = D.all_gather_object(info.rank)
D.shutdown_distributed()
rec["after"], rec["main_after"] = D.rank_world(), D.is_main()
with open(sys.argv[1].format(info.rank), "w") as f:
    json.dump(rec, f)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def test_rank_world_reads_the_process_group_first_then_the_environment(tmp_path):
    args = [str(tmp_path / "store"), str(tmp_path / "rank{}.json")]
    env = _env(RANK="0", WORLD_SIZE="1")
    procs = [subprocess.Popen([sys.executable, "-c", GROUP_SCRIPT, str(r), *args], env=env) for r in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    recs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, rec in enumerate(recs):
        assert rec["before"] == [0, 1] and rec["main_before"] is True  # the environment's (0 of 1)
        assert rec["during"] == [r, 2] and rec["main_during"] is (r == 0)  # the group's
        assert rec["gathered"] == [1, 11]  # in rank order
        assert rec["after"] == [0, 1]


def test_under_torchrun_rank_world_is_the_same_before_during_and_after_the_group(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(TORCHRUN_SCRIPT)
    cmd = [TORCHRUN, "--standalone", "--nproc-per-node", "2", str(script), str(tmp_path / "rank{}.json")]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, rec in enumerate(recs):
        assert rec["env"] == [str(r), "2"] and rec["initialised"] is True
        for when in ("before", "during", "after"):
            assert rec[when] == [r, 2], when
            assert rec[f"main_{when}"] is (r == 0), when
        assert rec["gathered"] == [0, 1]


def test_without_a_group_the_torchrun_environment_answers(monkeypatch):
    assert not torch.distributed.is_initialized()
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert rank_world() == (0, 1) and is_main()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert rank_world() == (1, 3) and not is_main()
    assert rank_and_world() == (1, 3)  # the shard reader asks the same question
    assert rank_and_world(0, 2) == (0, 2)  # explicit values still win there
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(RuntimeError, match="RANK=3 WORLD_SIZE=3"):
        rank_world()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(RuntimeError, match="must be integers"):
        is_main()


def test_fsync_dir_raises_for_a_missing_folder_and_passes_on_one_that_cannot_be_synced(tmp_path):
    fsync_dir(tmp_path)  # an ordinary folder
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "gone")  # a real failure: the caller must not record the work as done
    # procfs answers EINVAL to a directory fsync: a filesystem that cannot, not data that is lost
    fd = os.open("/proc", os.O_RDONLY)
    try:
        os.fsync(fd)
        pytest.skip("this kernel's /proc accepts a directory fsync")
    except OSError as e:
        assert e.errno == errno.EINVAL
    finally:
        os.close(fd)
    fsync_dir("/proc")


def test_atomic_path_renames_on_success_and_leaves_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "sub" / "clip.mp4"
    with atomic_path(target, suffix=".mp4") as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".clip.mp4.") and tmp.suffix == ".mp4"
        tmp.write_bytes(b"old")
    (tmp_path / "plain").write_bytes(b"x")
    assert target.read_bytes() == b"old"
    assert target.stat().st_mode == (tmp_path / "plain").stat().st_mode  # not mkstemp's 0600
    with pytest.raises(ValueError, match="encoder failed"), atomic_path(target, suffix=".mp4") as tmp:
        tmp.write_bytes(b"half a vid")
        raise ValueError("encoder failed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["clip.mp4"]


def test_save_torch_atomic_writes_a_file_torch_loads(tmp_path):
    obj = {"w": torch.arange(6.0).reshape(2, 3), "step": 4}
    path = save_torch_atomic(obj, tmp_path / "new" / "a.pt")
    assert path == tmp_path / "new" / "a.pt"
    back = torch.load(path, weights_only=True)
    assert back["step"] == 4 and torch.equal(back["w"], obj["w"])
    assert [p.name for p in path.parent.iterdir()] == ["a.pt"]
    # the same bytes as a save to memory (no temporary name inside the archive): a rerun writes the same file
    buf = io.BytesIO()
    torch.save(obj, buf)
    assert path.read_bytes() == buf.getvalue()


# The save fails part-way for real: the process may not write past LIMIT bytes (RLIMIT_FSIZE; SIGXFSZ is
# ignored, so write() fails with EFBIG), and the object is several times larger.
PARTIAL_SAVE = """
import os, resource, signal, sys
import torch
from maskahand.runtime.atomic import save_torch_atomic

path, limit, save = sys.argv[1], int(sys.argv[2]), sys.argv[3]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    (save_torch_atomic if save == "atomic" else torch.save)({"w": torch.ones(limit)}, path)
except Exception as e:
    print("raised", type(e).__name__, e)
    sys.exit(3)
sys.exit(0)
"""


def test_a_save_that_fails_part_way_leaves_the_old_file_whole_and_no_temporary(tmp_path):
    path = tmp_path / "model.pth"
    save_torch_atomic({"w": torch.zeros(3)}, path)
    before = path.read_bytes()
    limit = 64 * 1024
    assert len(before) < limit

    def partial_save(target: Path, save: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-c", PARTIAL_SAVE, str(target), str(limit), save],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 3 and "raised" in proc.stdout, proc.stdout + proc.stderr[-2000:]

    partial_save(path, "atomic")
    assert path.read_bytes() == before
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]
    # the same failure with a plain torch.save really does stop part-way: it leaves a torn file
    torn = tmp_path / "torn" / "model.pth"
    torn.parent.mkdir()
    torn.write_bytes(before)
    partial_save(torn, "plain")
    assert torn.stat().st_size > 0 and torn.read_bytes() != before
    with pytest.raises(Exception):  # noqa: B017, PT011 - torch raises several types for a torn zip
        torch.load(torn, weights_only=True)
