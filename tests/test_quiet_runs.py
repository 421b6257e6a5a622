"""Quiet runs: the real CLI in a subprocess prints none of MediaPipe's native start-up lines (driver and Ray
detector actors) nor Ray's token-authentication warning; ``-v`` shows the MediaPipe lines as DEBUG; ``eval``
shows a progress bar and one summary line instead of a log line per 200 entries."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import pytest

from maskahand.core.native_log import is_chatter, native_stderr_to_debug

XNNPACK = "Created TensorFlow Lite XNNPACK delegate"
# the raw lines, alone or behind Ray's "(DetectorWorker pid=N) " prefix (colour codes included)
RAW = re.compile(
    r"^(\S*\(\w+ pid=\d+\)\S* )?(INFO: Created TensorFlow Lite|WARNING: All log messages before absl"
    r"|W0000 .*inference_feedback_manager)",
    re.MULTILINE,
)
RAY_TOKEN = "Token authentication is enabled for this Ray cluster"


def run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
    }  # RAY_TMPDIR as the suite has it (Ray's socket paths are short)
    env.pop("RAY_AUTH_MODE", None)
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "maskahand.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip


def assert_no_chatter(text: str) -> None:
    assert not RAW.search(text), text[-3000:]


def test_chatter_lines_are_recognised_and_other_output_kept(capfd, caplog):
    assert is_chatter("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    assert is_chatter("W0000 00:00:1796484555.889518     488 inference_feedback_manager.cc:114] Feedback")
    assert not is_chatter("E0000 00:00:1796484555.889518     488 graph.cc:1] a real error")
    assert not is_chatter("maskahand mine: videos/a.mp4: not a video")
    with caplog.at_level(logging.DEBUG, logger="t"), native_stderr_to_debug(logging.getLogger("t"), "lib"):
        os.write(2, f"INFO: {XNNPACK} for CPU.\nE0000 00:00:1.2 7 graph.cc:1] keep me\n".encode())
    err = capfd.readouterr().err
    assert err == "E0000 00:00:1.2 7 graph.cc:1] keep me\n"
    assert [r.getMessage() for r in caplog.records] == [f"lib: INFO: {XNNPACK} for CPU."]


@pytest.mark.slow
def test_detector_run_keeps_the_native_lines_out_of_stderr_and_shows_them_with_v(shared_data, tmp_path):
    pytest.importorskip("mediapipe")
    image = shared_data / "images" / "hands23" / "EK_0028_P12_101_frame_0000086975.jpg"
    # with -v: the lines are there, but only as our DEBUG records (without -v the level hides them)
    verbose = run(["-v", "detector", "run", str(image), "--out", str(tmp_path / "hands.png")])
    assert verbose.returncode == 0, verbose.stderr
    assert_no_chatter(verbose.stderr + verbose.stdout)
    assert json.loads(verbose.stdout)["detector"]["name"] == "mediapipe"
    assert re.search(
        rf"DEBUG maskahand\.detector\.mediapipe_hands: mediapipe: INFO: {XNNPACK}", verbose.stderr
    )


@pytest.mark.slow
def test_mining_with_ray_actors_is_quiet(shared_data, tmp_path):
    pytest.importorskip("mediapipe")
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "espresso.mp4").symlink_to(shared_data / "videos" / "opra_espresso_vp9.mp4")
    done = run(["mine", "--videos", str(videos), "--out", str(tmp_path / "clips")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "started embedded Ray" in done.stderr and "videos: 1 (ok 1" in done.stdout + done.stderr
    assert_no_chatter(done.stderr + done.stdout)
    assert RAY_TOKEN not in done.stderr and "RAY_AUTH_MODE" not in done.stderr


def test_eval_shows_a_progress_bar_and_one_summary_line(shared_data, tmp_path):
    entries = json.loads((shared_data / "opra" / "test.json").read_text())[:450]
    annotations = tmp_path / "test.json"
    annotations.write_text(json.dumps(entries))
    out = tmp_path / "cb"
    done = run(["eval", "--dataset", "opra", "--annotations", str(annotations), "--baseline", "center-bias",
                "--protocol", "28", "--out", str(out), f"eval.cache_dir={tmp_path / 'gt'}"])  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert not re.search(r"\d+ / \d+ entries", done.stderr)  # no log line per N entries
    assert re.search(r"eval: 100%\|[^\n\r]*\| 450/450", done.stderr)  # the bar reached the end
    summary = re.findall(
        r"INFO maskahand\.evaluation\.evaluate: eval: 450 entries on this rank in [\d.]+ s", done.stderr
    )
    assert len(summary) == 1, done.stderr[-3000:]
