"""The guarded decord reader hands over to PyAV when decord fails part-way through a video.

The failure is injected through a real subclass of ``decord.VideoReader`` (everything else is the real
decord 0.6 decoding a real H.264 file): its ``get_batch`` raises, or returns frames of the wrong size,
once the requested frames reach source frame ``k``. The frames the reader returns must then be PyAV's
frames: same indices, same timestamps, no frame lost or repeated, and every frame's content is the frame
it claims to be (the video draws its frame number in binary).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from maskahand.core.config import VideoConfig
from maskahand.video import open_video
from maskahand.video.decord_backend import import_decord

try:  # through the project's import, as the backend does (it keeps PNG decoding working afterwards)
    decord = import_decord()
except ImportError:
    pytest.skip("decord is not installed (optional backend)", allow_module_level=True)

FRAMES, RATE, SIDE = 120, 30, 64
CFG = VideoConfig(fps=10, backend="decord")  # every third frame: 40 frames, five decord chunks of 8


def write_counter_video(path: Path) -> None:
    """64x64 H.264 whose frame i shows i in binary: 12 blocks of 16x16, white for a set bit."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=RATE, options={"preset": "ultrafast", "crf": "12"})
        stream.width, stream.height, stream.pix_fmt = SIDE, SIDE, "yuv420p"
        for i in range(FRAMES):
            image = np.zeros((SIDE, SIDE, 3), np.uint8)
            for bit in range(12):
                if i >> bit & 1:
                    row, col = divmod(bit, 4)
                    image[row * 16 : row * 16 + 16, col * 16 : col * 16 + 16] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def counter_of(image: torch.Tensor) -> int:
    gray = image.float().mean(0)
    return sum(1 << bit for bit in range(12) if gray[bit // 4 * 16 + 8, bit % 4 * 16 + 8] > 128)


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("decord") / "counter.mp4"
    write_counter_video(path)
    return path


def failing_reader(fail_at: int, mode: str) -> type:
    """A ``decord.VideoReader`` that breaks once a requested batch reaches source frame ``fail_at``."""

    class FailingVideoReader(decord.VideoReader):
        calls: list[list[int]] = []

        def get_batch(self, indices):
            indices = [int(i) for i in indices]
            FailingVideoReader.calls.append(indices)
            batch = super().get_batch(indices)
            if max(indices) < fail_at:
                return batch
            if mode == "raises":
                raise decord.DECORDError(f"[h264] Error sending packet at frame {fail_at}")
            return decord.nd.array(batch.asnumpy()[:, : SIDE // 2])  # a frame of another size

    return FailingVideoReader


def test_decord_reads_the_counter_video_itself(counter_video: Path) -> None:
    """Precondition of the tests below: without a failure decord's frames are used, and they are right."""
    reader = open_video(counter_video, CFG)
    frames = list(reader)
    assert reader.stats.backend_used == "decord"
    assert [f.index for f in frames] == list(range(0, FRAMES, 3))
    assert [counter_of(f.image) for f in frames] == [f.index for f in frames]


@pytest.mark.parametrize("mode", ["raises", "wrong_size"])
@pytest.mark.parametrize("fail_at", [0, 33, 117])  # first chunk, third chunk (mid-chunk frame), last chunk
def test_decord_failing_at_frame_k_falls_back_to_pyav(
    counter_video: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fail_at: int,
    mode: str,
) -> None:
    expected = list(open_video(counter_video, VideoConfig(fps=10, backend="pyav")))
    failing = failing_reader(fail_at, mode)
    monkeypatch.setattr(decord, "VideoReader", failing)
    caplog.set_level(logging.WARNING, logger="maskahand.video")

    reader = open_video(counter_video, CFG)
    frames = list(reader)

    # decord really ran, and really failed part-way: the chunk holding frame k was its last request
    assert failing.calls and max(failing.calls[-1]) >= fail_at > max(
        [-1, *(max(c) for c in failing.calls[:-1])]
    )
    handed_over = min(failing.calls[-1])  # first frame of the failed chunk: from here on PyAV decodes
    assert reader.stats.backend_used == "pyav"
    warnings = [r.getMessage() for r in caplog.records if "falling back to PyAV" in r.getMessage()]
    assert len(warnings) == 1 and "counter.mp4" in warnings[0]

    assert [f.index for f in frames] == [f.index for f in expected]  # none lost, none repeated
    assert [f.pts for f in frames] == pytest.approx([f.pts for f in expected], abs=1e-3)
    assert [counter_of(f.image) for f in frames] == [f.index for f in frames]
    for got, want in zip(frames, expected):
        if got.index >= handed_over:  # PyAV's own frames
            assert torch.equal(got.image, want.image), got.index
        else:  # decord's frames of the same picture (another YUV->RGB conversion)
            assert (got.image.int() - want.image.int()).abs().float().mean() < 2.0, got.index
    assert sum(f.index < handed_over for f in frames) == len(range(0, handed_over, 3))


PNG_AFTER_DECORD = """
import sys
import torch
from maskahand.video.decord_backend import import_decord
import_decord()
from maskahand.shards.codec import decode_heatmap, encode_heatmap
import torchvision.io as tio
heat = torch.rand(48, 40, dtype=torch.float64)
back = decode_heatmap(encode_heatmap(heat)).double()
target = torch.randint(0, 256, (3, 24, 20), dtype=torch.uint8)
assert torch.equal(tio.decode_png(tio.encode_png(target)), target)
assert (back - heat).abs().max() < 1e-5, "16-bit heatmap round trip"
"""


def test_png_decoding_still_works_in_a_process_that_loaded_decord() -> None:
    """decord ships its own zlib: imported before the PNG codecs' first use, they fail ("bad parameters to
    zlib") for the rest of the process, so a mine or synth worker using the decord backend could no longer
    read a heatmap. A fresh process, because the suite's own process may have used the codecs already."""
    done = subprocess.run(
        [sys.executable, "-c", PNG_AFTER_DECORD], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
