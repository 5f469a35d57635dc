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
         "--models", "t5_tags", "trocr_ocr", "--in-process-only", "--seed-requests", "1",
         "--batch-sizes", "2", "--report", str(out), "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    from i2tt_server.runners.base import auto_dtype

    served = auto_dtype("cpu", "bfloat16")
    # torch's default thread count, as the seed notebook has it (this process may have changed its own)
    default = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    threads = f"{default} thread(s)"
    assert f"| seed-style in-process, float32, {threads}, one at a time | 1 |" in result.stdout
    if served != "float32":
        assert (f"| seed-style in-process, {served} (served dtype), {threads}, one at a time | 1 |"
                in result.stdout)
    assert f"| in-process batched, b=2, {served}, " in result.stdout
    # what CONFIDENCE costs: the same batch again computing it, for the models that have it
    assert f"| in-process batched, b=2, with CONFIDENCE, {served}, " in result.stdout
    assert result.stdout.count("with CONFIDENCE / without (same inputs): ") == 1  # trocr_ocr
    text = out.read_text()
    assert "## Machine" in text and "in-process batched, b=2" in text
    assert out.with_suffix(".png").is_file() and out.with_suffix(".json").is_file()


def test_roofline_counts_the_vision_encoders_operations(weights_dir):
    """The GFLOP figure of the report's roofline row is the encoder's real operation count:
    per layer 24 N d^2 for the projections (QKV, output, MLP with 4d, here counted from
    the config's intermediate size) plus 4 N^2 d for attention, and the patch embedding."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from benchlib import roofline
    from i2tt_server.runners import BlipCaptioner

    blip = BlipCaptioner.from_parameters({"weights_root": str(weights_dir), "warmup": "false",
                                          "device": "cpu", "dtype": "float32"})
    config = blip.model.config.vision_config
    d, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    patches = (config.image_size // config.patch_size) ** 2
    n = patches + 1  # the class token
    per_layer = 2 * n * d * (4 * d + 2 * inner) + 4 * n * n * d
    embedding = 2 * patches * d * 3 * config.patch_size ** 2
    pixels = torch.zeros(2, 3, config.image_size, config.image_size)
    per_image, seconds, achieved = roofline.vision_encoder_gflops(blip.model, pixels, repeats=1)
    assert per_image * 1e9 == layers * per_layer + embedding
    assert seconds > 0 and achieved > 0
    assert roofline.matmul_peak_gflops(torch.float32, torch.device("cpu"), size=64, repeats=1) > 0


def test_the_deadline_check_answers_every_caller_on_tiny_weights(weights_dir, tmp_path):
    """Row 6 of the benchmark alone on tiny weights: the shipped queue policy, callers
    without a deadline and with the CLI's, all answered (the check's own verdict is read)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--weights", str(weights_dir),
         "--models", "caption_tags", "--deadline-check-only", "--deadline-callers", "6",
         "--report", str(tmp_path / "REPORT.md"), "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("deadline check, ")]
    assert len(lines) == 4  # as measured, and again at the end
    assert all("6 of 6 answered" in line and "(every request answered)" in line for line in lines)
    assert "without a deadline" in lines[0] and "with a 120 s deadline" in lines[1]
