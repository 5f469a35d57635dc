"""scripts/bench.py end to end on tiny weights (in-process rows only: no server). Timings
are printed by the benchmark, never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_runs_in_process_rows_on_tiny_weights(weights_dir, tmp_path):
    out = tmp_path / "REPORT.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--weights", str(weights_dir),
         "--models", "t5_tags", "--in-process-only", "--seed-requests", "1",
         "--batch-sizes", "2", "--report", str(out), "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "| seed-style in-process, fp32, one at a time | 1 |" in result.stdout
    assert "| in-process batched, b=2 | 2 |" in result.stdout
    text = out.read_text()
    assert "## Machine" in text and "in-process batched, b=2" in text
    assert out.with_suffix(".png").is_file() and out.with_suffix(".json").is_file()
