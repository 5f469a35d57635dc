"""What the benchmark prints while it runs: timestamped progress lines, and each row as
soon as it is measured (the final tables are ``report.table``'s)."""

from __future__ import annotations

import time

from .stats import Row


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def print_row(row: Row) -> None:
    extra = ""
    if row.extra.get("triton"):
        extra = "  batch " + " / ".join(f"{m}={v['mean_batch']:g}"
                                        for m, v in row.extra["triton"].items() if v.get("executions"))
    print(f"    {row.label:48s} {row.throughput:8.3f} img/s  p50 {row.p(50):7.2f}s  "
          f"p95 {row.p(95):7.2f}s  p99 {row.p(99):7.2f}s{extra}", flush=True)
