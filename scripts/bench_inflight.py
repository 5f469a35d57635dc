#!/usr/bin/env python3
"""In-flight against static batching, side by side in one run, on the real server.

For each model with an in-flight path (``--models``), each path is served alone in turn
(`i2tt-server serve --scheduling static|inflight`, the CPU batching profile on a CPU, the
response cache off, every request distinct):
  1. latency at concurrency 1 (a few requests one after another);
  2. throughput at saturation: a closed loop with twice the batch size in callers; the
     static path's figure is the capacity the open-loop rates are fractions of;
  3. open-loop Poisson arrivals at --loads x that capacity (default 50, 80, 100, 120 %):
     throughput, goodput (answered within 10 s), p50, p95 and p99 latency, refusals;
  4. a caller that gives up: one request sent alone and abandoned at 30 % of its time
     alone; on the in-flight path the decoding steps it cost (i2tt_decode_steps_total),
     against the steps the same request takes to its end.
``ocr_page``, whose lines trocr_ocr reads (served with it, on the same path), is measured
by its pages instead: a 60-line page and a 3-line page alone, then the 3-line page sent
just after the 60-line one (--page-gap), and which came back first.
A model measured in an earlier run keeps its section (with that run's settings) when this
run measures others.
The weights are full-size random ones whose answers END at varying lengths (built once,
``--lengths varied`` of the synthetic builder, see i2tt_server/weights/synthetic.py):
pinned lengths would hide what in-flight batching changes.

Writes docs/benchmarks/INFLIGHT.md, .json and .png (or --out) and prints the ratios and
the targets met. ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.console import log  # noqa: E402
from benchlib.inputs import Payloads, seed_images_dir  # noqa: E402
from benchlib.openloop import GOOD_S, OpenLoopRow, call_with_deadline, run_open_loop  # noqa: E402
from benchlib.served import drive  # noqa: E402
from benchlib.targets import input_of, is_ensemble, measured_models, steps_of  # noqa: E402
from benchlib.weights import ensure_weights  # noqa: E402

PATHS = ("static", "inflight")
DEFAULT_WEIGHTS = ROOT / "build" / "bench-weights-varied"
# Targets on a 2-core CPU (the in-flight issue): in-flight over static.
TARGETS = {"p95 at 80 % load": ("<=", 0.6), "throughput at saturation": (">=", 1.3),
           "latency at concurrency 1": ("<=", 1.05)}
PAGE_MODEL = "ocr_page"  # measured by a pair of pages: its lines are trocr_ocr's
LONG_PAGE, SHORT_PAGE = 60, 3  # lines


def parse_args(argv=None) -> argparse.Namespace:
    from i2tt_server.runners import RUNNERS

    stepped = {n for n, r in RUNNERS.items() if r.serves_in_flight()}
    # and the ensembles whose every step has an in-flight path (caption_tags)
    ensembles = [m for m in measured_models() if is_ensemble(m)
                 and set(steps_of(m)) <= stepped]
    capable = sorted(stepped) + ensembles + [PAGE_MODEL]
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=capable, default=capable)
    parser.add_argument("--loads", type=float, nargs="+", default=[0.5, 0.8, 1.0, 1.2])
    parser.add_argument("--arrivals", type=int, default=40, help="requests per open-loop level")
    parser.add_argument("--saturation-requests", type=int, default=48)
    parser.add_argument("--alone-requests", type=int, default=3)
    parser.add_argument("--page-pairs", type=int, default=2,
                        help="ocr_page: times the 3-line page is sent after a 60-line one")
    parser.add_argument("--page-gap", type=float, default=0.5,
                        help="ocr_page: seconds between the 60-line page and the 3-line one")
    parser.add_argument("--weights", type=Path, help="weights root (default: full-size random "
                        f"weights with varied lengths in {DEFAULT_WEIGHTS.relative_to(ROOT)})")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "INFLIGHT")
    parser.add_argument("--quick", action="store_true",
                        help="fewer requests: 12 arrivals per level, 16 at saturation")
    args = parser.parse_args(argv)
    if args.quick:
        args.arrivals, args.saturation_requests, args.alone_requests = 12, 16, 2
    return args


def start(model: str, path: str, weights: Path, device: str, log_file: Path):
    from i2tt_server.launcher import TritonServer, free_port
    from i2tt_server.repository import chain, derive_repository, find_repository, set_parameter
    from i2tt_server.runners import RUNNERS
    from i2tt_server.runners.generative import GenerativeRunner
    from i2tt_server.serve_options import ServeOptions

    repository = Path(tempfile.mkdtemp(prefix="i2tt-bench-inflight-")) / "repository"
    models = served_models([model])
    edit = chain(*[set_parameter(m, "device", device) for m in models
                   if m in RUNNERS and issubclass(RUNNERS[m], GenerativeRunner)])\
        if device != "auto" else None
    derive_repository(find_repository(), repository, edit, models=models)
    server = TritonServer(ServeOptions(repository, weights=weights, http_port=free_port(),
                                       grpc_port=free_port(), metrics_port=free_port(),
                                       host="127.0.0.1", cache_size=0, scheduling=path,
                                       log_file=log_file))
    return server.start(timeout=1800)


def served_models(models: list[str]) -> list[str]:
    """``models``, an ensemble's steps and the models they call: what the server loads."""
    from i2tt_server.repository import ModelRepository, find_repository

    wanted = [m for model in models for m in [model, *steps_of(model)]]
    return ModelRepository.read(find_repository()).with_called_models(list(dict.fromkeys(wanted)))


def decode_steps(server, model: str) -> float:
    url = f"http://127.0.0.1:{server.options.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    # an ensemble's: its steps' together
    prefixes = tuple(f'i2tt_decode_steps_total{{model="{m}"}}' for m in steps_of(model))
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(prefixes))


def settled_steps(server, model: str) -> float:
    last = -1.0
    while True:
        now = decode_steps(server, model)
        if now == last:
            return now
        last = now
        time.sleep(0.5)


def max_batch(server, model: str) -> int:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        return int(client.get_model_config(model, as_json=True)["config"]["max_batch_size"])


def measure_path(model: str, path: str, args, payloads: Payloads, weights: Path,
                 capacity: float | None, offset: int) -> dict:
    """Every row of one path, on its own server."""
    kind, name = input_of(model)
    payload = lambda i: payloads.get(kind, i)  # noqa: E731
    log_file = ROOT / "build" / f"bench-inflight-{model}-{path}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log(f"{model} {path}: starting the server")
    server = start(model, path, weights, args.device, log_file)
    try:
        url, out = server.grpc_url, {"path": path}
        drive(url, model, name, payload, 2, 1, offset)  # warm the connection, not measured
        wall, alone, _ = drive(url, model, name, payload, args.alone_requests, 1, offset + 10)
        out["alone_s"] = sum(alone) / len(alone)
        callers = 2 * max_batch(server, model)
        wall, lat, errors = drive(url, model, name, payload, args.saturation_requests,
                                  callers, offset + 100)
        out["saturation"] = {"callers": callers, "throughput": len(lat) / wall,
                             "errors": len(errors)}
        log(f"  alone {out['alone_s']:.2f} s, saturation {len(lat) / wall:.3f} req/s")
        capacity = capacity or out["saturation"]["throughput"]
        out["open_loop"] = []
        for load in args.loads:
            rate = capacity * load
            # the same requests in the same pattern, scaled to the rate, at every level and
            # on both paths (answers end at varied lengths: other texts, or another draw of
            # arrivals, would measure other work)
            wall, lat, errors = run_open_loop(url, model, name, payload, rate, args.arrivals,
                                              offset + 1000, seed=0)
            row = OpenLoopRow(model, path, load, rate, args.arrivals, wall, lat, errors)
            out["open_loop"].append(row.as_dict())
            log(f"  {load:.0%} ({rate:.3f}/s): p50 {row.p(50):.2f} p95 {row.p(95):.2f} "
                f"p99 {row.p(99):.2f} s, goodput {row.goodput:.3f}/s, {len(errors)} refused")
        out["cancel"] = cancel_row(server, model, name, payload(offset + 9000), out["alone_s"],
                                   path)
        return out
    finally:
        server.stop()


def measure_pages(path: str, args, payloads: Payloads, weights: Path) -> dict:
    """ocr_page on one path: each page alone, then the short page sent just after the
    long one, ``--page-pairs`` times (other pages each time)."""
    import threading

    log_file = ROOT / "build" / f"bench-inflight-{PAGE_MODEL}-{path}.log"
    log(f"{PAGE_MODEL} {path}: starting the server")
    server = start(PAGE_MODEL, path, weights, args.device, log_file)
    url = server.grpc_url

    def timed(lines: int, i: int) -> float:
        started = time.perf_counter()
        outcome = call_with_deadline(url, PAGE_MODEL, "IMAGE", payloads.page(i, lines), 3600)
        if outcome != "answered":
            raise RuntimeError(f"a {lines}-line page was not answered: {outcome}")
        return time.perf_counter() - started

    try:
        timed(SHORT_PAGE, 0)  # warm the connection and the line finding, not measured
        out = {"path": path, "alone_long_s": timed(LONG_PAGE, 1),
               "alone_short_s": timed(SHORT_PAGE, 2), "pairs": []}
        for k in range(args.page_pairs):
            ended: dict = {}

            def send(name, lines, i):
                ended[name] = (timed(lines, i), time.perf_counter())

            long = threading.Thread(target=send, args=("long", LONG_PAGE, 10 + k))
            long.start()
            time.sleep(args.page_gap)
            send("short", SHORT_PAGE, 20 + k)
            long.join()
            out["pairs"].append({"long_s": ended["long"][0], "short_s": ended["short"][0],
                                 "short_first": ended["short"][1] < ended["long"][1]})
        log(f"  alone: {LONG_PAGE} lines {out['alone_long_s']:.2f} s, {SHORT_PAGE} lines "
            f"{out['alone_short_s']:.2f} s; after the long one: " + ", ".join(
                f"{p['short_s']:.2f} s ({'first' if p['short_first'] else 'after it'})"
                for p in out["pairs"]))
        return out
    finally:
        server.stop()


def page_ratios(static: dict, inflight: dict) -> dict:
    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows)

    return {f"{SHORT_PAGE}-line page sent after a {LONG_PAGE}-line page: latency":
            mean(inflight["pairs"], "short_s") / mean(static["pairs"], "short_s"),
            f"{LONG_PAGE}-line page alone": inflight["alone_long_s"] / static["alone_long_s"],
            f"{SHORT_PAGE}-line page alone": inflight["alone_short_s"] / static["alone_short_s"]}


def cancel_row(server, model: str, name: str, value, alone_s: float, path: str) -> dict:
    """The steps a request cost when its caller left at 30 % of its time alone, against
    the steps it takes to its end (in-flight only: the static path runs it to its end)."""
    row = {"left_after_s": round(0.3 * alone_s, 3)}
    if path != "inflight":
        row["steps"] = "all (generate runs the batch to its end)"
        return row
    before = settled_steps(server, model)
    started = time.perf_counter()
    call_with_deadline(server.grpc_url, model, name, value, 3600)
    whole = time.perf_counter() - started
    full = settled_steps(server, model) - before
    before = settled_steps(server, model)
    row["client_saw"] = call_with_deadline(server.grpc_url, model, name, value, 0.3 * alone_s)
    row["steps"], row["full_steps"] = settled_steps(server, model) - before, full
    # the steps it would have run by the deadline at its pace alone (its encode included)
    row["steps_by_deadline"] = round(full * min(1.0, 0.3 * alone_s / whole), 1)
    return row


def ratios(static: dict, inflight: dict) -> dict:
    def at(rows, load):
        return next((r for r in rows if abs(r["load"] - load) < 1e-9), None)

    out = {"latency at concurrency 1": inflight["alone_s"] / static["alone_s"],
           "throughput at saturation": inflight["saturation"]["throughput"]
           / static["saturation"]["throughput"]}
    s80, i80 = at(static["open_loop"], 0.8), at(inflight["open_loop"], 0.8)
    if s80 and i80:
        out["p95 at 80 % load"] = i80["p95_s"] / s80["p95_s"]
    for s, i in zip(static["open_loop"], inflight["open_loop"]):
        out[f"p95 at {s['load']:.0%} load (in-flight/static)"] = i["p95_s"] / s["p95_s"]
    return out


def met(name: str, value: float) -> bool | None:
    if name not in TARGETS:
        return None
    sign, bound = TARGETS[name]
    return value <= bound if sign == "<=" else value >= bound


def page_markdown(paths: dict) -> list[str]:
    lines = [f"| path | {LONG_PAGE} lines alone s | {SHORT_PAGE} lines alone s | "
             f"{SHORT_PAGE} lines sent after {LONG_PAGE} s | {LONG_PAGE} lines then s | "
             f"{SHORT_PAGE}-line page answered first |", "|---|---|---|---|---|---|"]
    for name in PATHS:
        row = paths[name]
        pairs = row["pairs"]
        lines.append(f"| {name} | {row['alone_long_s']:.2f} | {row['alone_short_s']:.2f} | "
                     + ", ".join(f"{p['short_s']:.2f}" for p in pairs) + " | "
                     + ", ".join(f"{p['long_s']:.2f}" for p in pairs) + " | "
                     + f"{sum(p['short_first'] for p in pairs)} of {len(pairs)} |")
    lines += ["", "| ratio (in-flight / static) | value |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in paths["ratios"].items()]
    return lines + [""]


def markdown(results: dict) -> str:
    lines = ["# In-flight against static batching", "",
             "Generated by `scripts/bench_inflight.py` (`make bench-inflight`). Both paths are "
             "served by the same tritonserver build, one after the other, on full-size random "
             "weights whose answers end at varied lengths; every request is distinct and the "
             "response cache is off. Latency is measured from each arrival's scheduled time. "
             "Each model's two paths ran in one run (its settings below).", ""]
    for model, paths in results.items():
        static, inflight = paths["static"], paths["inflight"]
        lines += [f"## {model}", "", "Settings: `" + json.dumps(paths["settings"]) + "`", ""]
        if model == PAGE_MODEL:
            lines += page_markdown(paths)
            continue
        lines += [
                  f"Alone: static {static['alone_s']:.2f} s, in-flight {inflight['alone_s']:.2f} s. "
                  f"Saturation ({static['saturation']['callers']} callers): static "
                  f"{static['saturation']['throughput']:.3f} req/s, in-flight "
                  f"{inflight['saturation']['throughput']:.3f} req/s.", "",
                  "| path | load | arrivals/s | answered | refused | throughput/s | "
                  f"goodput (<= {GOOD_S:g} s)/s | p50 s | p95 s | p99 s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in static["open_loop"] + inflight["open_loop"]:
            lines.append(f"| {row['path']} | {row['load']:.0%} | {row['rate']:.3f} | "
                         f"{row['answered']} | {row['errors']} | {row['throughput']:.3f} | "
                         f"{row['goodput']:.3f} | {row['p50_s']:.2f} | {row['p95_s']:.2f} | "
                         f"{row['p99_s']:.2f} |")
        cancel = inflight["cancel"]
        lines += ["", f"A caller that left after {cancel['left_after_s']} s (30 % of its time "
                  f"alone) cost {cancel['steps']:.0f} of the {cancel['full_steps']:.0f} steps "
                  f"its request takes to its end on the in-flight path (at its pace alone it "
                  f"would have run {cancel['steps_by_deadline']} by then; the client saw "
                  f"{cancel['client_saw']}); on the static path it costs the whole batch.", "",
                  "| ratio (in-flight / static) | value | target | met |", "|---|---|---|---|"]
        for name, value in paths["ratios"].items():
            target = TARGETS.get(name)
            verdict = met(name, value)
            lines.append(f"| {name} | {value:.2f} | "
                         f"{f'{target[0]} {target[1]}' if target else ''} | "
                         f"{'' if verdict is None else ('yes' if verdict else 'NO')} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {m: paths for m, paths in results.items() if m != PAGE_MODEL}
    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for axis, (model, paths) in zip(axes[0], results.items()):
        for name in PATHS:
            rows = paths[name]["open_loop"]
            for q, style in (("p50_s", "--"), ("p95_s", "-")):
                axis.plot([r["load"] * 100 for r in rows], [r[q] for r in rows], style,
                          marker="o", label=f"{name} {q[:3]}")
        axis.set(title=model, xlabel="load (% of the static path's capacity)",
                 ylabel="latency (s)")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)


def earlier_results(path: Path, measured: list[str]) -> dict:
    """The sections of an earlier report for the models this run does not measure, each
    with the settings it ran with."""
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text())
    kept = {}
    for model, paths in earlier.get("results", {}).items():
        if model not in measured:
            kept[model] = {"settings": earlier.get("settings", {}), **paths}
    return kept


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from i2tt_server.runners import RUNNERS

    served = served_models(args.models)
    folders = sorted({RUNNERS[m].default_folder() for m in served
                      if m in RUNNERS and RUNNERS[m].checkpoints})
    weights = ensure_weights(args.weights, folders, DEFAULT_WEIGHTS, lengths="varied")
    payloads = Payloads(seed_images_dir(ROOT))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    results = earlier_results(args.out.with_suffix(".json"), args.models)
    for model in args.models:
        if model == PAGE_MODEL:
            static = measure_pages("static", args, payloads, weights)
            inflight = measure_pages("inflight", args, payloads, weights)
            found = page_ratios(static, inflight)
        else:
            static = measure_path(model, "static", args, payloads, weights, None, 0)
            capacity = static["saturation"]["throughput"]
            inflight = measure_path(model, "inflight", args, payloads, weights, capacity, 0)
            found = ratios(static, inflight)
        results[model] = {"settings": settings, "static": static, "inflight": inflight,
                          "ratios": found}
        for name, value in found.items():
            verdict = met(name, value)
            print(f"  {model}: {name}: {value:.2f}"
                  + ("" if verdict is None else f"  target {'met' if verdict else 'MISSED'}"))
        # after each model, so that a later one's failure loses nothing measured
        args.out.with_suffix(".json").write_text(json.dumps({"results": results}, indent=1))
        args.out.with_suffix(".md").write_text(markdown(results))
        plot(results, args.out.with_suffix(".png"))
        log(f"wrote {args.out}.md, .json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
