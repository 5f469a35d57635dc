#!/usr/bin/env python3
"""I2TT benchmark: in-process transformers against Triton serving, in one run.

Rows, for caption_tags (BLIP caption -> T5 tags) and each selected single model:
  1. seed-style baseline: transformers called directly, one image at a time, float32 with
     torch's default thread count (as the seed notebook); again at the served dtype;
  2. in-process batched: the serving code (i2tt_server runners) without Triton, at the
     served dtype and threads, at batch sizes up to what the server batches; the best is
     the ceiling of what one process does with no serving overhead; for the models with a
     CONFIDENCE output, the largest batch again on the same inputs, computing it, and the
     ratio of the two (what confidence costs);
  3. Triton over gRPC with dynamic batching, at several client concurrencies (single
     models: 1 and --ratio-level);
  4. caption_tags with batching off (max_batch_size 1, derived repository);
  5. the BLIP vision encoder's achieved GFLOP/s against a matmul peak, same dtype and run;
  6. the deadline check (not with --quick): caption_tags with the shipped queue policy,
     --deadline-callers callers without a deadline, then as many through I2TTClient with
     the i2tt CLI's default deadline: every request must be answered.
Every request carries distinct image bytes and the server's response cache is off.
Generation settings are the served ones on both sides; with full-size random weights the
generated length is pinned, so every row generates the same number of tokens. On a CPU
the server runs the CPU batching profile (what `i2tt-server serve` does without a GPU).

Writes a markdown report, a plot and the raw rows as JSON; prints the table, the ratios
and whether each target is met. `make bench BENCH_ARGS="--quick"` for a short run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import report  # noqa: E402
from benchlib.inputs import Payloads, seed_images_dir  # noqa: E402
from benchlib.phases import Phases  # noqa: E402
from benchlib.plan import Plan, prepare  # noqa: E402
from benchlib.stats import Row  # noqa: E402
from benchlib.targets import is_ensemble, max_batch_size, measured_models  # noqa: E402
from benchlib.weights import DEFAULT_ROOT as DEFAULT_WEIGHTS  # noqa: E402

# The model the README's targets are claimed on (report.GOALS) and the deadline check runs.
HEADLINE = "caption_tags"


def build_parser(models: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=models, default=list(models),
                        help=f"what to benchmark (default: {' '.join(models)}; "
                             "full-size kosmos2_caption is very slow on a CPU)")
    parser.add_argument("--weights", type=Path,
                        help="weights root with real checkpoints (default: full-size random "
                             f"weights in {DEFAULT_WEIGHTS.relative_to(ROOT)}, built if missing)")
    parser.add_argument("--blip", choices=["base", "large"],
                        help="BLIP weights (default: base on CPU, large on CUDA)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--concurrency", type=int, nargs="+", help="default: 1 4 16 64")
    parser.add_argument("--requests", type=int,
                        help="requests per served level, at least the concurrency (default 6)")
    parser.add_argument("--seed-requests", type=int, help="seed-style requests (default 4)")
    parser.add_argument("--single-concurrency", type=int, nargs="+",
                        help="served levels for single-model targets (default: 1 and --ratio-level)")
    parser.add_argument("--single-requests", type=int, default=3,
                        help="seed-style requests and served c=1 requests for single-model "
                             "targets (default 3; full-size Kosmos-2 is slow on a CPU)")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"],
                        default="auto", help="served dtype (default auto: bfloat16 on CPUs with "
                        "native bfloat16, half precision on GPUs, else float32)")
    parser.add_argument("--seed-threads", type=int,
                        help="torch threads of the seed-style rows (default: torch's own default, "
                             "as the seed notebook runs)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="in-process (default 4 8 16)")
    parser.add_argument("--batches", type=int, default=1, help="batches per in-process size")
    parser.add_argument("--torch-threads", type=int,
                        help="torch threads per process for both sides: in-process, and each "
                             "served model (its torch_threads parameter). Default: the server's "
                             "own default (half the cores on CPU), used in-process too")
    parser.add_argument("--compile-encoders", action="store_true",
                        help="served and in-process rows with each image encoder compiled "
                             "(the compile_encoder parameter); the seed-style rows stay eager")
    parser.add_argument("--nobatch-concurrency", type=int, nargs="+",
                        help="levels for the batching-off server (default 1 4 16: without batching, "
                             "throughput is flat past saturation and c=64 costs 64 serial requests)")
    parser.add_argument("--ratio-level", type=int, default=16,
                        help="served concurrency compared with the in-process rows")
    parser.add_argument("--no-batching-off", action="store_true",
                        help="skip the batching-off server (rows 4)")
    parser.add_argument("--in-process-only", action="store_true",
                        help="only rows 1 and 2 (no tritonserver)")
    parser.add_argument("--quick", action="store_true",
                        help="short run: concurrency 1 4 16, 4 requests a level, "
                             "3 seed-style requests, batch sizes 4 8")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks" / "REPORT.md")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "build" / "bench")
    parser.add_argument("--note", action="append", default=[], help="a line for the report")
    parser.add_argument("--deadline-check-only", action="store_true",
                        help="only row 6, the deadline check (caption_tags)")
    parser.add_argument("--deadline-callers", type=int,
                        help="callers of each kind in the deadline check (default 16; "
                             "0 with --quick: no check)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The command line with every default filled in (--quick's where it is given)."""
    args = build_parser(measured_models()).parse_args(argv)
    quick = args.quick
    if args.deadline_callers is None:
        args.deadline_callers = 0 if quick else 16
    args.concurrency = args.concurrency or ([1, 4, 16] if quick else [1, 4, 16, 64])
    args.requests = args.requests or (4 if quick else 6)
    args.seed_requests = args.seed_requests or (3 if quick else 4)
    args.batch_sizes = args.batch_sizes or ([4, 8] if quick else [4, 8, 16])
    args.nobatch_concurrency = args.nobatch_concurrency or [c for c in args.concurrency if c <= 16]
    args.single_concurrency = args.single_concurrency or [1, args.ratio_level]
    return args


def measure(phases: Phases) -> tuple[list[Row], list[str]]:
    """The rows the options ask for, and the deadline check's lines."""
    options, targets = phases.options, phases.plan.targets
    served = not (options.in_process_only or options.deadline_check_only)
    rows: list[Row] = []
    for target in targets if not options.deadline_check_only else []:
        rows += phases.inprocess_rows(target)
    if served:
        rows += phases.served_rows(targets, batching=True)
    off_targets = [t for t in targets if is_ensemble(t)]
    if off_targets and served and not options.no_batching_off:
        rows += phases.served_rows(off_targets, batching=False)
    checked = []
    if options.deadline_callers and HEADLINE in targets and not options.in_process_only:
        checked = phases.deadline_lines(HEADLINE)
    return rows, checked


def run_settings(plan: Plan, started: dt.datetime, elapsed: float, load_before,
                 load_after) -> dict:
    """The report's Settings section."""
    options = plan.options
    seed_threads_from = ("torch's default here" if plan.seed_threads == plan.default_threads
                         else "--seed-threads")
    return {
        "started": started.strftime("%Y-%m-%d %H:%M"), "duration_s": round(elapsed),
        "device": plan.device,
        "weights": str(options.weights) if options.weights else
        f"full-size random (architecture-true) weights in {DEFAULT_WEIGHTS.relative_to(ROOT)}",
        "models": " ".join(plan.targets),
        "served parameters (also used in-process)": "; ".join(
            f"{s}: " + ", ".join(f"{k}={v}" for k, v in sorted(p.items()) if k != "device")
            for s, p in plan.parameters.items()),
        "concurrency levels": " ".join(map(str, options.concurrency)) + (
            f" (batching off: {' '.join(map(str, options.nobatch_concurrency))})"
            if options.nobatch_concurrency != options.concurrency else ""),
        "torch threads": f"seed-style rows {plan.seed_threads} ({seed_threads_from}); "
                         f"in-process batched rows and each served model process "
                         f"{plan.served_threads}"
                         + ("" if options.torch_threads else " (the server's default)"),
        "served dtype": ", ".join(f"{s}: {plan.served_dtype(s)}" for s in plan.steps)
                        + ("" if options.dtype == "auto" else " (--dtype)"),
        "served batching": ("the shipped configs" if plan.device == "cuda" else
                            "the CPU profile (max batch: " + ", ".join(
                                f"{s} {max_batch_size(s, plan.device)}" for s in plan.steps) + ")"),
        "requests per served level": f"max({options.requests}, concurrency); single models: "
                                      f"levels {' '.join(map(str, options.single_concurrency))}, "
                                      f"max({options.single_requests}, concurrency), "
                                      f"{min(options.seed_requests, options.single_requests)} seed-style",
        "seed-style requests": options.seed_requests,
        "in-process batch sizes": f"{' '.join(map(str, options.batch_sizes))} "
                                  f"({options.batches} batch(es) each; one warm-up batch before the first size)",
        "server": "tritonserver from nvidia-pytriton, gRPC, distinct image bytes per request "
                  "(every request a cache miss) except the cache-hit row; response cache off "
                  "in the batching-off server",
        "load average (1/5/15 min) at start / end":
            f"{' '.join(f'{v:.1f}' for v in load_before)} / "
            f"{' '.join(f'{v:.1f}' for v in load_after)}",
        "ratio_level": options.ratio_level,
    }


def print_verdicts(rows: list[Row], targets: list[str], ratio_level: int) -> bool:
    """Each target's table, ratios and verdicts; whether the headline's targets are all met."""
    ok = True
    for target in targets:
        print(f"== {target}")
        print("\n".join(report.table(rows, target)))
        values = report.ratios(rows, target, ratio_level)
        for key, what, value, goal, met in report.verdicts(values):
            sign = ">=" if key != "single_request_p50" else "<="
            print(f"   {what}: {value:.2f} (target {sign} {goal:g}): "
                  f"{'MET' if met else 'NOT MET'}")
            if target == HEADLINE:
                ok = ok and met
        if "batching_on_vs_off" in values:
            print(f"   batching on / off at c={ratio_level}: {values['batching_on_vs_off']:.2f}")
        if "confidence_cost" in values:
            print(f"   in-process throughput with CONFIDENCE / without (same inputs): "
                  f"{values['confidence_cost']:.3f}")
        print()
    return ok


def write_report(path: Path, rows: list[Row], targets: list[str], info: dict, settings: dict,
                 notes: list[str], roofline: dict) -> None:
    """The markdown report, its plot and the raw rows as JSON, side by side."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_path = path.with_suffix(".png")
    report.plot(rows, targets, plot_path)
    path.write_text(report.markdown(rows, targets, info, settings, plot_path.name, notes,
                                    roofline))
    path.with_suffix(".json").write_text(json.dumps(
        {"machine": info, "settings": settings, "roofline": roofline,
         "rows": [r.as_dict() for r in rows]},
        indent=1))
    print(f"report: {path}  plot: {plot_path}  raw: {path.with_suffix('.json')}")


def main(argv=None) -> int:
    options = parse_args(argv)
    plan = prepare(options)
    started = dt.datetime.now()
    load_before = os.getloadavg()
    phases = Phases(plan, Payloads(seed_images_dir(ROOT)))
    rows, checked = measure(phases)
    elapsed = (dt.datetime.now() - started).total_seconds()
    load_after = os.getloadavg()

    info = report.machine()
    settings = run_settings(plan, started, elapsed, load_before, load_after)
    print()
    ok = print_verdicts(rows, plan.targets, options.ratio_level)
    write_report(options.report, rows, plan.targets, info, settings, options.note + checked,
                 phases.roofline)
    if HEADLINE in plan.targets and not options.deadline_check_only:
        print(f"{HEADLINE} targets: " + ("all met" if ok else "not all met"))
    for line in checked:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
