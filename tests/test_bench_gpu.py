"""``make bench-gpu`` (benchmarks/gpu.py): the parts that run without a GPU.

The GPU sections themselves need CUDA (not on the test machines); here: the no-CUDA exit, the SDPA kernel
detection the Afformer section reports, and the Markdown table.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_without_cuda_one_line_exit_0_nothing_written(tmp_path):
    out = tmp_path / "bench"
    env = {"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0], r.stdout
    assert not out.exists()


def test_sdpa_kernel_detection_names_the_kernel_that_ran(torch_one_thread):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from benchmarks.gpu import sdpa_kernels

    q = torch.rand(1, 2, 16, 8)
    k = torch.rand(1, 2, 16, 8)

    def forced(backend):
        def step():
            with sdpa_kernel(backend):
                F.scaled_dot_product_attention(q, k, k)

        return step

    assert sdpa_kernels(forced(SDPBackend.MATH)) == ["math"]
    assert sdpa_kernels(forced(SDPBackend.FLASH_ATTENTION)) == ["flash_cpu"]
    assert sdpa_kernels(lambda: torch.matmul(q, k.transpose(-1, -2))) == []


def test_markdown_table_one_row_per_figure_with_missing_values_dashed():
    from benchmarks.gpu import markdown_table

    rows = [
        {"bench": "detector", "setting": "hircnn fp16 batch 16", "value": 123.456, "unit": "frames/s",
         "gpu_util_mean": 87.5, "gpu_util_max": 99.0},
        {"bench": "afformer", "setting": "T=32 batch 8", "value": 41.2, "unit": "samples/s", "peak_gb": 12.25,
         "sdpa_kernel": "flash"},
        {"bench": "trainer", "setting": "samples/s", "value": None, "unit": "", "note": "TODO: no entry point"},
    ]  # fmt: skip
    lines = markdown_table(rows).strip().splitlines()
    assert len(lines) == 2 + len(rows)
    assert {line.count("|") for line in lines} == {9}
    assert "| 123 | frames/s |" in lines[2] and "87.5 / 99" in lines[2]
    assert "| 12.2 | flash |" in lines[3] or "| 12.3 | flash |" in lines[3]
    assert "| - |" in lines[4] and "TODO: no entry point" in lines[4] and "- / -" in lines[4]


@pytest.mark.gpu
def test_gpu_sections_run_on_cuda(tmp_path, shared_data):
    """On a CUDA machine: the detector and Afformer sections produce figures and a table."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from benchmarks.gpu import main

    out = tmp_path / "bench"
    assert main(["--data", str(shared_data), "--out", str(out), "--only", "detector", "afformer",
                 "--detector-frames", "32", "--afformer-iters", "2"]) == 0  # fmt: skip
    import json

    rows = json.loads((out / "results.json").read_text())["rows"]
    assert all(r.get("value") for r in rows), rows
    assert {r["sdpa_kernel"] for r in rows if r["bench"] == "afformer"} - {"none"}
    assert (out / "results.md").read_text().count("\n|") >= len(rows)
