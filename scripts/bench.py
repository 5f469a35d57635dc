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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import deadlines, inprocess, report, served  # noqa: E402
from benchlib.inprocess import pinned_new_tokens  # noqa: E402
from benchlib.inputs import Payloads, seed_images_dir  # noqa: E402
from benchlib.stats import Row  # noqa: E402

# every served model, ensembles included, that runs models of its own: the bench compares
# them with the seed's one-at-a-time transformers calls. ocr_page runs no model of its own
# (Tesseract finds the lines, trocr_ocr reads them), so it has no seed-style side.
PAGE_MODELS = ("ocr_page",)
MODELS = tuple(sorted(p.parent.name for p in (ROOT / "model_repository").glob("*/config.pbtxt")
                      if p.parent.name not in PAGE_MODELS))
DEFAULT_TARGETS = ("caption_tags", "blip_caption", "t5_tags", "trocr_ocr", "kosmos2_caption")
# Targets measured at every concurrency level and with batching off; the single models get
# the short set of rows (--single-concurrency, --single-requests).
ENSEMBLE_TARGETS = ("caption_tags",)
DEFAULT_WEIGHTS = ROOT / "build" / "bench-weights"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(DEFAULT_TARGETS),
                        help=f"what to benchmark (default: {' '.join(DEFAULT_TARGETS)}; "
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
    args = parser.parse_args(argv)
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


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- settings: the served parameters, with the bench's overrides --------------------------

def served_settings(args, steps: list[str], weights: Path) -> dict[str, dict[str, str]]:
    """Each step's effective settings (its runner's defaults, then its config.pbtxt
    parameters) with the bench's overrides applied: BLIP size, and max_new_tokens set to
    the length the weights pin (if they pin one)."""
    import dataclasses

    from i2tt_server.repository import read_config
    from i2tt_server.runners import RUNNERS

    settings = {}
    for step in steps:
        config = read_config(ROOT / "model_repository" / step)
        configured = {k: v.string_value for k, v in config.parameters.items()}
        effective = RUNNERS[step].settings_class.from_parameters(configured)
        params = {k: str(v).lower() if isinstance(v, bool) else str(v)
                  for k, v in dataclasses.asdict(effective).items()}
        if step == "blip_caption":
            params["weights"] = f"blip-{args.blip}"
        pinned = pinned_new_tokens(weights / params["weights"])
        if pinned:
            params["max_new_tokens"] = str(pinned)
        if args.device == "cpu":
            params["device"] = "cpu"
        if args.torch_threads:
            params["torch_threads"] = str(args.torch_threads)
        if args.dtype != "auto":
            params["dtype"] = args.dtype
        settings[step] = params
    return settings


def overrides(settings: dict[str, dict[str, str]]):
    """Config edits that make the served settings the bench's (only where they differ)."""
    from i2tt_server.repository import chain, read_config, set_parameter
    from i2tt_server.runners import RUNNERS

    edits = []
    for step, params in settings.items():
        config = read_config(ROOT / "model_repository" / step)
        configured = {k: v.string_value for k, v in config.parameters.items()}
        effective = RUNNERS[step].settings_class.from_parameters(configured)
        for key, value in params.items():
            if str(getattr(effective, key)).lower() != value.lower():
                edits.append(set_parameter(step, key, value))
    return chain(*edits)


def ensure_weights(args, steps: list[str], settings) -> Path:
    from i2tt_server.weights_layout import missing_folders

    folders = sorted({settings[s]["weights"] for s in steps})
    root = args.weights or DEFAULT_WEIGHTS
    missing = missing_folders(root, folders)
    if not args.weights:
        # Weights built by an older builder measure something else (a changed tokenizer
        # changes every sequence length): rebuild them when the builder has changed.
        import hashlib

        from i2tt_server.weights import synthetic

        stamp = root / "builder.sha256"
        digest = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()
        if stamp.is_file() and stamp.read_text().strip() != digest:
            log(f"the weights builder changed since {root} was built: rebuilding")
            missing = folders
        root.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest + "\n")
    if missing and args.weights:
        sys.exit(f"error: no weights for {missing} in {root}")
    if missing:
        from i2tt_server.weights.synthetic import make_test_weights

        log(f"building full-size random weights for {missing} in {root} (once)")
        make_test_weights(root, "full", missing, log=log)
    return root


# -- the phases --------------------------------------------------------------------------

class Offsets:
    """Hands out fresh payload indices, so no two measured requests share bytes."""

    def __init__(self):
        self.next = 0

    def take(self, n: int) -> int:
        start, self.next = self.next, self.next + n + 100  # +100: room for warm-ups
        return start


def served_dtype(step: str, settings, device: str) -> str:
    """The dtype a served step runs in: its setting, where ``auto`` is resolved as the
    runner resolves it (bfloat16 on CPUs with native bfloat16, half precision on GPUs)."""
    from i2tt_server.runners import RUNNERS
    from i2tt_server.runners.base import auto_dtype

    requested = settings[step].get("dtype", "auto")
    return requested if requested != "auto" else auto_dtype(device, RUNNERS[step].gpu_dtype)


def inprocess_rows(args, target, settings, weights, payloads, offsets) -> list[Row]:
    import torch
    from i2tt_server.runners import RUNNERS
    from i2tt_server.runners.base import CONFIDENCE

    kind, input_name = inprocess.input_of(target)
    payload = lambda i: payloads.get(kind, i)  # noqa: E731
    steps = inprocess.steps_of(target)
    single = len(steps) == 1 and target not in ENSEMBLE_TARGETS
    device = "cuda" if args.device == "cuda" else "cpu"
    rows = []
    # The seed notebook's way: float32 and torch's own thread count; then the same at the
    # served dtype, so the report separates what the dtype gives from what serving gives.
    served_dtypes = {step: served_dtype(step, settings, device) for step in steps}
    variants = [("seed", {step: "float32" for step in steps})]
    if set(served_dtypes.values()) != {"float32"}:
        variants.append(("seed-dtype", served_dtypes))
    torch.set_num_threads(args.seed_threads)
    n = min(args.seed_requests, args.single_requests) if single else args.seed_requests
    for row_kind, dtypes in variants:
        names = "/".join(dict.fromkeys(dtypes.values()))
        label = (f"seed-style in-process, {names}{' (served dtype)' if row_kind != 'seed' else ''}, "
                 f"{args.seed_threads} thread(s), one at a time")
        models = inprocess.load_steps(target, lambda step: inprocess.SeedStyle(
            step, weights / settings[step]["weights"], settings[step], device,
            getattr(torch, dtypes[step])))
        log(f"{target}: {label}, {n} requests")
        row = inprocess.run_seed_style(target, models, payload, n, label, offsets.take(n))
        row.kind = row_kind
        row.extra["threads"] = args.seed_threads
        rows.append(row)
        print_row(row)
        inprocess.release(models)
        del models
    torch.set_num_threads(args.served_threads)

    runners = [inprocess.TimedRunner(RUNNERS[step].from_parameters(
        {**settings[step], "weights_root": str(weights), "warmup": "false",
         **({"device": device} if args.device != "auto" else {})})) for step in steps]
    limit = min(max_batch_size(step, args.device) for step in steps)
    sizes = [b for b in args.batch_sizes if b <= limit] or [limit]
    if single:
        sizes = sizes[-1:]  # one size for the single-model rows: the largest served
    for number, size in enumerate(sizes):
        log(f"{target}: in-process batched, b={size}, {args.batches} batch(es)")
        offset = offsets.take(size * args.batches)
        row = inprocess.run_batched(target, runners, payload, input_name, size, args.batches,
                                    offset, warmup=number == 0)
        row.label += f", {names_of(runners)}, {args.served_threads} thread(s)"
        rows.append(row)
        print_row(row)
    if single and CONFIDENCE in runners[0].runner.outputs:
        # the same inputs as the largest batch above (so the same generated lengths), now
        # with the step scores kept and CONFIDENCE computed from them
        log(f"{target}: in-process batched, b={size}, with CONFIDENCE")
        row = inprocess.run_batched(target, runners, payload, input_name, size, args.batches,
                                    offset, warmup=False, confidence=True)
        row.label += f", {names_of(runners)}, {args.served_threads} thread(s)"
        rows.append(row)
        print_row(row)
    if "blip_caption" in steps and not ROOFLINE:
        blip = next(t.runner for t in runners if t.runner.name == "blip_caption")
        ROOFLINE.update(roofline_row(blip, payloads, sizes[-1], args.served_threads))
    inprocess.release(runners)
    return rows


def names_of(runners) -> str:
    return "/".join(dict.fromkeys(str(t.runner.dtype).replace("torch.", "") for t in runners))


ROOFLINE: dict = {}


def roofline_row(blip, payloads, batch: int, threads: int) -> dict:
    """The BLIP vision encoder's achieved GFLOP/s against a matmul peak, same dtype and
    threads, measured here and now."""
    from benchlib import roofline

    images = [blip.image(payloads.photo(90_000 + i)) for i in range(batch)]
    pixels = blip.to_device(blip.processor(images=images, return_tensors="pt"))["pixel_values"]
    log(f"roofline: BLIP vision encoder at b={batch}, {blip.dtype}, and a matmul peak")
    per_image, seconds, achieved = roofline.vision_encoder_gflops(blip.model, pixels)
    peak = roofline.matmul_peak_gflops(blip.dtype, blip.device)
    result = {"dtype": str(blip.dtype).replace("torch.", ""), "threads": threads,
              "batch": batch, "gflop_per_image": round(per_image, 1),
              "seconds_per_batch": round(seconds, 3), "achieved_gflops": round(achieved, 1),
              "matmul_peak_gflops": round(peak, 1), "fraction_of_peak": round(achieved / peak, 3)}
    print(f"    roofline: {result}", flush=True)
    return result


# Models whose config enables the response cache (the single Python models cannot:
# Triton would cache their errors as empty successes).
CACHED_TARGETS = ("caption_tags",)
CACHE_BYTES = 256 * 1024 * 1024


def max_batch_size(step: str, device: str) -> int:
    """The largest batch the server would run for ``step`` (the CPU profile's on a CPU)."""
    from i2tt_server.repository import cpu_batching, read_config

    config = read_config(ROOT / "model_repository" / step)
    if device != "cuda":
        cpu_batching(config)
    return config.max_batch_size


def served_rows(args, targets, settings, weights, payloads, offsets, batching: bool) -> list[Row]:
    from i2tt_server.repository import batching_off, chain, derive_repository, unbounded_queues

    variant = "on" if batching else "off"
    kind = "served" if batching else "served-nobatch"
    models = sorted({m for t in targets for m in (t, *inprocess.steps_of(t))})
    # 64 closed-loop clients exceed the shipped queue limits on a CPU: measure capacity
    edit = chain(overrides(settings), unbounded_queues) if batching \
        else chain(overrides(settings), batching_off)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    repository = derive_repository(ROOT / "model_repository", args.work_dir / f"repository-{variant}",
                                   edit, models=models)
    log_file = args.work_dir / f"tritonserver-{variant}.log"
    log(f"starting tritonserver, batching {variant}, models {models} (log: {log_file})")
    t0 = time.perf_counter()
    server = served.start_server(repository, weights, log_file,
                                 cache_size=CACHE_BYTES if batching else 0)
    log(f"server ready in {time.perf_counter() - t0:.0f}s")
    rows = []
    try:
        for target in targets:
            kind_of_input, input_name = inprocess.input_of(target)
            payload = lambda i, k=kind_of_input: payloads.get(k, i)  # noqa: E731
            steps = inprocess.steps_of(target)
            served.drive(server.grpc_url, target, input_name, payload, 1, 1,
                         offsets.take(1))  # warm-up
            single = target not in ENSEMBLE_TARGETS
            levels = args.concurrency if batching else args.nobatch_concurrency
            for level in (args.single_concurrency if single else levels):
                n = max(args.single_requests if single else args.requests, level)
                log(f"{target}: Triton batching {variant}, c={level}, {n} requests")
                row = served.served_row(server, target, steps, input_name, payload, n, level,
                                        kind, f"Triton gRPC, batching {variant}, c={level}",
                                        offsets.take(n))
                rows.append(row)
                print_row(row)
            if batching and target in CACHED_TARGETS:
                # The same image again and again: every request after the warm-up's is a
                # response-cache hit (compare with the c=1 row, all misses).
                seen = offsets.take(1)
                served.drive(server.grpc_url, target, input_name, payload, 1, 1, seen)
                n = max(args.requests, 1)
                log(f"{target}: Triton response cache hits, c=1, {n} requests")
                row = served.served_row(server, target, steps, input_name,
                                        lambda i, s=seen: payload(s), n, 1, "served-cache",
                                        "Triton gRPC, cache hit (repeated image), c=1", 0)
                rows.append(row)
                print_row(row)
    finally:
        server.stop()
    return rows


def deadline_lines(args, settings, weights, payloads, offsets) -> list[str]:
    """Row 6: the shipped queue policy (queue limits and timeouts as configured) under
    callers without deadlines and callers with the CLI's default one."""
    from i2tt_client.cli import DEFAULT_TIMEOUT
    from i2tt_server.repository import derive_repository

    models = ["caption_tags", *inprocess.steps_of("caption_tags")]
    repository = derive_repository(ROOT / "model_repository", args.work_dir / "repository-shipped",
                                   overrides(settings), models=models)
    base = offsets.take(2 * args.deadline_callers)
    log(f"deadline check: {args.deadline_callers} callers without a deadline, then "
        f"{args.deadline_callers} with {DEFAULT_TIMEOUT:g} s")
    return deadlines.deadline_check(repository, weights, args.work_dir / "tritonserver-shipped.log",
                                    "caption_tags", lambda i: payloads.photo(base + i),
                                    args.deadline_callers, DEFAULT_TIMEOUT)


def print_row(row: Row) -> None:
    extra = ""
    if row.extra.get("triton"):
        extra = "  batch " + " / ".join(f"{m}={v['mean_batch']:g}"
                                        for m, v in row.extra["triton"].items() if v.get("executions"))
    print(f"    {row.label:48s} {row.throughput:8.3f} img/s  p50 {row.p(50):7.2f}s  "
          f"p95 {row.p(95):7.2f}s  p99 {row.p(99):7.2f}s{extra}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    from i2tt_server.runners.base import cpu_threads, limit_cpu_kernel_caches

    # Before any model runs here: every row gets the kernel caches of the served processes
    # (runners set them too, but only the first primitive compiled in a process counts).
    limit_cpu_kernel_caches()
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    default_threads = torch.get_num_threads()  # torch's own default, before any change
    args.seed_threads = args.seed_threads or default_threads
    # in-process batched rows: as the served model processes (half the cores on a CPU)
    args.served_threads = args.torch_threads or (cpu_threads() if args.device == "cpu"
                                                 else torch.get_num_threads())
    torch.set_num_threads(args.served_threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no GPU")
    args.blip = args.blip or ("large" if args.device == "cuda" else "base")
    targets = [t for t in MODELS if t in args.models]
    steps = sorted({s for t in targets for s in inprocess.steps_of(t)})
    weights = args.weights or DEFAULT_WEIGHTS
    # settings read the weights' generation config, so make the weights first
    settings = served_settings(args, steps, weights)
    weights = ensure_weights(args, steps, settings)
    settings = served_settings(args, steps, weights)

    started = dt.datetime.now()
    load_before = os.getloadavg()
    payloads = Payloads(seed_images_dir(ROOT))
    offsets = Offsets()
    rows: list[Row] = []
    for target in targets if not args.deadline_check_only else []:
        rows += inprocess_rows(args, target, settings, weights, payloads, offsets)
    if not (args.in_process_only or args.deadline_check_only):
        rows += served_rows(args, targets, settings, weights, payloads, offsets, batching=True)
    off_targets = [t for t in targets if t in ENSEMBLE_TARGETS]
    if off_targets and not (args.no_batching_off or args.in_process_only or args.deadline_check_only):
        rows += served_rows(args, off_targets, settings, weights, payloads, offsets, batching=False)
    checked = []
    if args.deadline_callers and "caption_tags" in targets and not args.in_process_only:
        checked = deadline_lines(args, settings, weights, payloads, offsets)
        args.note += checked
    elapsed = (dt.datetime.now() - started).total_seconds()
    load_after = os.getloadavg()

    info = report.machine()
    run_settings = {
        "started": started.strftime("%Y-%m-%d %H:%M"), "duration_s": round(elapsed),
        "device": args.device,
        "weights": str(args.weights) if args.weights else
        f"full-size random (architecture-true) weights in {DEFAULT_WEIGHTS.relative_to(ROOT)}",
        "models": " ".join(targets),
        "served parameters (also used in-process)": "; ".join(
            f"{s}: " + ", ".join(f"{k}={v}" for k, v in sorted(p.items()) if k != "device")
            for s, p in settings.items()),
        "concurrency levels": " ".join(map(str, args.concurrency)) + (
            f" (batching off: {' '.join(map(str, args.nobatch_concurrency))})"
            if args.nobatch_concurrency != args.concurrency else ""),
        "torch threads": f"seed-style rows {args.seed_threads} ("
                         f"{'torch' + chr(39) + 's default here' if args.seed_threads == default_threads else '--seed-threads'}); "
                         f"in-process batched rows and each served model process "
                         f"{args.served_threads}" + ("" if args.torch_threads else " (the server's default)"),
        "served dtype": ", ".join(f"{s}: {served_dtype(s, settings, args.device)}" for s in steps)
                        + ("" if args.dtype == "auto" else " (--dtype)"),
        "served batching": ("the shipped configs" if args.device == "cuda" else
                            "the CPU profile (max batch: " + ", ".join(
                                f"{s} {max_batch_size(s, args.device)}" for s in steps) + ")"),
        "requests per served level": f"max({args.requests}, concurrency); single models: "
                                      f"levels {' '.join(map(str, args.single_concurrency))}, "
                                      f"max({args.single_requests}, concurrency), "
                                      f"{min(args.seed_requests, args.single_requests)} seed-style",
        "seed-style requests": args.seed_requests,
        "in-process batch sizes": f"{' '.join(map(str, args.batch_sizes))} "
                                  f"({args.batches} batch(es) each; one warm-up batch before the first size)",
        "server": "tritonserver from nvidia-pytriton, gRPC, distinct image bytes per request "
                  "(every request a cache miss) except the cache-hit row; response cache off "
                  "in the batching-off server",
        "load average (1/5/15 min) at start / end":
            f"{' '.join(f'{v:.1f}' for v in load_before)} / "
            f"{' '.join(f'{v:.1f}' for v in load_after)}",
        "ratio_level": args.ratio_level,
    }

    print()
    ok = True
    for target in targets:
        print(f"== {target}")
        print("\n".join(report.table(rows, target)))
        values = report.ratios(rows, target, args.ratio_level)
        for key, what, value, goal, met in report.verdicts(values):
            sign = ">=" if key != "single_request_p50" else "<="
            print(f"   {what}: {value:.2f} (target {sign} {goal:g}): "
                  f"{'MET' if met else 'NOT MET'}")
            if target == "caption_tags":
                ok = ok and met
        if "batching_on_vs_off" in values:
            print(f"   batching on / off at c={args.ratio_level}: {values['batching_on_vs_off']:.2f}")
        if "confidence_cost" in values:
            print(f"   in-process throughput with CONFIDENCE / without (same inputs): "
                  f"{values['confidence_cost']:.3f}")
        print()

    args.report.parent.mkdir(parents=True, exist_ok=True)
    plot_path = args.report.with_suffix(".png")
    report.plot(rows, targets, plot_path)
    args.report.write_text(report.markdown(rows, targets, info, run_settings, plot_path.name,
                                           args.note, ROOFLINE))
    args.report.with_suffix(".json").write_text(json.dumps(
        {"machine": info, "settings": run_settings, "roofline": ROOFLINE,
         "rows": [r.as_dict() for r in rows]},
        indent=1))
    print(f"report: {args.report}  plot: {plot_path}  raw: {args.report.with_suffix('.json')}")
    if "caption_tags" in targets and not args.deadline_check_only:
        print("caption_tags targets: " + ("all met" if ok else "not all met"))
    for line in checked:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
