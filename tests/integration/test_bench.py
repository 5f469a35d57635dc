"""scripts/bench.py end to end on tiny weights (in-process rows only: no server). Timings
are printed by the benchmark, never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_bench_runs_in_process_rows_on_tiny_weights(weights_dir, tmp_path):
    out = tmp_path / "REPORT.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--weights", str(weights_dir),
         "--models", "t5_tags", "--in-process-only", "--seed-requests", "1",
         "--batch-sizes", "2", "--report", str(out), "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    from i2tt_server.runners.base import auto_dtype

    served = auto_dtype("cpu", "bfloat16")
    threads = f"{torch.get_num_threads()} thread(s)"  # torch's default, as the seed notebook
    assert f"| seed-style in-process, float32, {threads}, one at a time | 1 |" in result.stdout
    if served != "float32":
        assert (f"| seed-style in-process, {served} (served dtype), {threads}, one at a time | 1 |"
                in result.stdout)
    assert f"| in-process batched, b=2, {served}, " in result.stdout
    text = out.read_text()
    assert "## Machine" in text and "in-process batched, b=2" in text
    assert out.with_suffix(".png").is_file() and out.with_suffix(".json").is_file()
