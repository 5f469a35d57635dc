#!/usr/bin/env python3
"""Batch-size sweep per model: seconds per item at each batch size, in-process, with the
served code (i2tt_server runners), the served dtype and the served thread count.

This is what the CPU batching profile (server/i2tt_server/repository.py, CPU_BATCHING) is
chosen from. Sizes run in rounds whose order alternates (ascending, then descending), so a
change in the machine's load during the sweep spreads over every size instead of
favouring one; the table gives the median over rounds and each round's value.

    python scripts/sweep.py --models blip_caption t5_tags --sizes 1 2 4 8 16 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.inputs import Payloads, seed_images_dir  # noqa: E402
from benchlib.settings import pinned_new_tokens  # noqa: E402

DEFAULT_WEIGHTS = ROOT / "build" / "bench-weights"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["blip_caption", "t5_tags", "trocr_ocr"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                        help="weights root (default: the benchmark's full-size random weights)")
    parser.add_argument("--blip", choices=["base", "large"], default="base")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks" / "SWEEP.md")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from i2tt_server.runners import RUNNERS

    payloads = Payloads(seed_images_dir(ROOT))
    lines = ["# Batch-size sweep", "",
             f"`scripts/sweep.py` on {os.cpu_count()} cores, full-size random weights, "
             f"dtype {args.dtype}, torch threads as served; load average at start "
             f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}. Seconds per item (median of "
             f"{args.rounds} rounds, alternating order; each round's value in brackets), and "
             "throughput gain over batch 1.", ""]
    for name in args.models:
        cls = RUNNERS[name]
        params = {"weights_root": str(args.weights), "warmup": "false", "dtype": args.dtype}
        if name == "blip_caption":
            params["weights"] = f"blip-{args.blip}"
        folder = args.weights / params.get("weights", cls.default_folder())
        if pinned_new_tokens(folder):  # as the benchmark: the length the weights pin
            params["max_new_tokens"] = str(pinned_new_tokens(folder))
        runner = cls.from_parameters(params)
        kind, input_name = cls.sample, cls.inputs[0]

        def batch(size: int, base: int) -> float:
            values = [payloads.get(kind, base + k) for k in range(size)]
            items = runner.parse({input_name: [v.encode() if isinstance(v, str) else v
                                               for v in values]})
            t0 = time.perf_counter()
            runner.infer(items)
            return time.perf_counter() - t0

        batch(1, 50_000)  # warm-up
        per_item: dict[int, list[float]] = {s: [] for s in args.sizes}
        for number in range(args.rounds):
            order = args.sizes if number % 2 == 0 else list(reversed(args.sizes))
            for size in order:
                seconds = batch(size, 1000 * number + 100 * size)
                per_item[size].append(seconds / size)
                print(f"{name} round {number} b={size}: {seconds:.2f}s, "
                      f"{seconds / size:.3f} s/item (load {os.getloadavg()[0]:.1f})", flush=True)
        base = statistics.median(per_item[args.sizes[0]])
        lines += [f"## {name} ({runner.dtype}, {torch.get_num_threads()} thread(s))", "",
                  "| batch | s/item | rounds | gain |", "|---:|---:|---|---:|"]
        for size in args.sizes:
            median = statistics.median(per_item[size])
            rounds = ", ".join(f"{v:.2f}" for v in per_item[size])
            lines.append(f"| {size} | {median:.2f} | {rounds} | {base / median:.2f}x |")
        lines.append("")
        del runner
    lines.append(f"Load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}.")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
