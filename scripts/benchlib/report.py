"""The table printed to the terminal, the ratios against the targets, the markdown report
and its plot."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

from .stats import Row

# (name, what, target, better): the claims the benchmark checks on caption_tags.
GOALS = (
    ("speedup_vs_seed", "served c=16 throughput / seed-style baseline throughput (float32)",
     3.0, "higher"),
    ("fraction_of_ceiling", "served c=16 throughput / in-process batched ceiling (served dtype)",
     0.9, "higher"),
    ("single_request_p50", "served c=1 p50 latency / seed-style single-call p50 at the served "
     "dtype", 1.10, "lower"),
)


def machine() -> dict:
    info = {"cpu": platform.processor() or "unknown", "cores": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next((l for l in Path("/proc/cpuinfo").read_text().splitlines()
                      if l.startswith("flags")), "")
        info["cpu_flags"] = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni",
                                                 "amx_bf16") if f" {f}" in flags)
    except OSError:
        pass
    try:
        import torch
        import transformers

        info["torch"] = torch.__version__
        info["transformers"] = transformers.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    from importlib import metadata

    for package in ("tritonclient", "nvidia-pytriton"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return info


def best_inprocess(rows: list[Row], target: str) -> Row | None:
    candidates = [r for r in rows if r.target == target and r.kind == "inprocess"]
    return max(candidates, key=lambda r: r.throughput, default=None)


def find(rows, target, kind, concurrency=None) -> Row | None:
    for row in rows:
        if row.target == target and row.kind == kind and (
                concurrency is None or row.concurrency == concurrency):
            return row
    return None


def ratios(rows: list[Row], target: str, level: int = 16) -> dict[str, float]:
    """The three target ratios for one model, plus what batching buys at ``level`` and
    what computing CONFIDENCE costs in-process (throughput with it / without, same batch)."""
    seed = find(rows, target, "seed")
    # the single call at the served dtype (the float32 row where that is the served dtype)
    seed_dtype = find(rows, target, "seed-dtype") or seed
    ceiling = best_inprocess(rows, target)
    served = find(rows, target, "served", level)
    single = find(rows, target, "served", 1)
    off = find(rows, target, "served-nobatch", level)
    out = {}
    if seed and served:
        out["speedup_vs_seed"] = served.throughput / seed.throughput
    if ceiling and served:
        out["fraction_of_ceiling"] = served.throughput / ceiling.throughput
    if seed_dtype and single:
        out["single_request_p50"] = single.p(50) / seed_dtype.p(50)
    if served and off:
        out["batching_on_vs_off"] = served.throughput / off.throughput
    scored = find(rows, target, "inprocess-confidence")
    plain = [r for r in rows if scored and r.target == target and r.kind == "inprocess"
             and r.batch_size == scored.batch_size]
    if plain:
        out["confidence_cost"] = scored.throughput / plain[0].throughput
    return out


def verdicts(values: dict[str, float]) -> list[tuple[str, str, float, float, bool]]:
    out = []
    for key, what, goal, better in GOALS:
        if key in values:
            value = values[key]
            met = value >= goal if better == "higher" else value <= goal
            out.append((key, what, value, goal, met))
    return out


def _fmt(value: float, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table(rows: list[Row], target: str) -> list[str]:
    """Markdown table rows for one target (also readable in a terminal)."""
    seed = find(rows, target, "seed")
    lines = ["| row | requests | images/s | p50 s | p95 s | p99 s | x seed | mean batch |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in (r for r in rows if r.target == target):
        batch = ""
        if row.extra.get("triton"):
            steps = {m: v for m, v in row.extra["triton"].items()
                     if m != row.target or len(row.extra["triton"]) == 1}
            batch = " / ".join(f"{v['mean_batch']:g}" for v in steps.values() if v.get("executions"))
        elif row.kind.startswith("inprocess"):
            batch = str(row.batch_size)
        speedup = row.throughput / seed.throughput if seed else math.nan
        errors = f" ({row.errors} errors)" if row.errors else ""
        lines.append(f"| {row.label}{errors} | {row.images} | {_fmt(row.throughput, 3)} | "
                     f"{_fmt(row.p(50))} | {_fmt(row.p(95))} | {_fmt(row.p(99))} | "
                     f"{_fmt(speedup)} | {batch} |")
    return lines


def plot(rows: list[Row], targets: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(targets), 2, figsize=(11, 3.6 * len(targets)), squeeze=False)
    for (ax_tp, ax_lat), target in zip(axes, targets):
        for kind, style, name in (("served", "o-", "batching on"),
                                  ("served-nobatch", "s--", "batching off")):
            series = sorted((r for r in rows if r.target == target and r.kind == kind),
                            key=lambda r: r.concurrency)
            if series:
                xs = [r.concurrency for r in series]
                ax_tp.plot(xs, [r.throughput for r in series], style, label=f"Triton, {name}")
                ax_lat.plot(xs, [r.p(95) for r in series], style, label=f"Triton, {name}")
        seed, ceiling = find(rows, target, "seed"), best_inprocess(rows, target)
        if seed:
            ax_tp.axhline(seed.throughput, color="grey", ls=":", label="seed-style, in-process")
            ax_lat.axhline(seed.p(95), color="grey", ls=":", label="seed-style, in-process")
        if ceiling:
            ax_tp.axhline(ceiling.throughput, color="green", ls="-.",
                          label=f"in-process batched ceiling (b={ceiling.batch_size})")
        for ax, ylabel in ((ax_tp, "images/s"), (ax_lat, "p95 latency (s)")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{target}: {ylabel}")
            ax.grid(True, alpha=0.3)
        ax_tp.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows: list[Row], targets: list[str], info: dict, settings: dict,
             plot_name: str | None, notes: list[str], roofline: dict | None = None) -> str:
    out = ["# I2TT benchmark", "",
           "Produced by `scripts/bench.py` (`make bench`); every row below comes from one run, "
           "on one machine, with the same weights.", "", "## Machine", ""]
    out += [f"- {key}: {value}" for key, value in info.items()]
    out += ["", "## Settings", ""]
    out += [f"- {key}: {value}" for key, value in settings.items()]
    if notes:
        out += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    out += ["", "## Targets", ""]
    for target in targets:
        out += _target_lines(rows, target, settings.get("ratio_level", 16))
    out += ["## Results", "",
            "Throughput in images (requests) per second; latencies per request as the client "
            "sees it. In-process batched rows give every image of a batch the batch's latency. "
            "`mean batch` for Triton rows is requests per execution as Triton's statistics "
            "count them, per step (blip_caption / t5_tags for caption_tags).", ""]
    for target in targets:
        out += [f"### {target}", ""] + table(rows, target) + [""]
    if plot_name:
        out += [f"![throughput and p95 latency against concurrency]({plot_name})", ""]
    if roofline:
        out += _roofline_lines(roofline)
    return "\n".join(out + _time_lines(rows)) + "\n"


def _target_lines(rows: list[Row], target: str, level: int) -> list[str]:
    """One target's ratios against its goals (none when no ratio could be computed)."""
    values = ratios(rows, target, level)
    if not values:
        return []
    out = [f"### {target}", "", "| ratio | value | target | met |", "|---|---:|---:|---|"]
    for key, what, value, goal, met in verdicts(values):
        sign = ">=" if key != "single_request_p50" else "<="
        out.append(f"| {what} | {value:.2f} | {sign} {goal:g} | {'yes' if met else 'NO'} |")
    if "batching_on_vs_off" in values:
        out.append(f"| served c={level}: batching on / off "
                   f"| {values['batching_on_vs_off']:.2f} | (informative) | |")
    if "confidence_cost" in values:
        out.append(f"| in-process throughput with CONFIDENCE / without (same inputs) "
                   f"| {values['confidence_cost']:.3f} | (informative) | |")
    return out + [""]


def _roofline_lines(r: dict) -> list[str]:
    return ["## Close to the limit", "",
            f"The BLIP vision encoder (operations counted by torch's FlopCounterMode on the "
            f"forward pass) against the best of three 2048x2048 matmuls, both in "
            f"{r['dtype']} with {r['threads']} thread(s), in this run:", "",
            "| what | batch | GFLOP per image | s per batch | GFLOP/s | matmul peak GFLOP/s | of peak |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| BLIP vision encoder | {r['batch']} | {r['gflop_per_image']:.1f} | "
            f"{r['seconds_per_batch']:.2f} | {r['achieved_gflops']:.1f} | "
            f"{r['matmul_peak_gflops']:.1f} | {100 * r['fraction_of_peak']:.0f} % |", ""]


def _time_lines(rows: list[Row]) -> list[str]:
    """Where the time goes: the in-process split per batch and Triton's per-step statistics."""
    out = ["## Where the time goes", "",
           "In-process (per batch, seconds): `parse` is image decoding and checks, `generate` "
           "is model.generate, the rest of `infer` is the processor and post-processing.", "",
           "| target | batch | parse s | infer s | of which generate s |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        split = row.extra.get("per_batch")
        if split:
            out.append(f"| {row.target} | {row.batch_size} | {split['parse_s']:.3f} | "
                       f"{split['infer_s']:.3f} | {split['generate_s']:.3f} |")
    out += ["", "Triton, per request and per step (milliseconds, from the server's statistics): "
            "queue is time waiting in the scheduler, compute_infer is the duration of the "
            "execute() call that served the request (decode, preprocessing, generate, "
            "post-processing of its whole batch: Triton counts a batch's time once for each "
            "request in it). For the caption_tags ensemble itself, compute_infer spans both "
            "steps.", "",
            "| target | row | step | mean batch | queue ms | compute_input ms | compute_infer ms | compute_output ms |",
            "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        for step, s in row.extra.get("triton", {}).items():
            if s.get("executions"):
                out.append(f"| {row.target} | {row.label} | {step} | {s['mean_batch']:g} | "
                           f"{s['queue_ms']:.1f} | {s['compute_input_ms']:.1f} | "
                           f"{s['compute_infer_ms']:.1f} | {s['compute_output_ms']:.1f} |")
    return out
