"""One benchmark row: how many requests, how long, and the latency distribution."""

from __future__ import annotations

import dataclasses
import math


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclasses.dataclass
class Row:
    target: str  # caption_tags, blip_caption, ...
    kind: str  # seed | inprocess | served | served-nobatch
    label: str  # what the table shows, e.g. "Triton, batching on, c=16"
    images: int  # requests (items) completed
    wall_s: float
    latencies_s: list[float] = dataclasses.field(repr=False)
    concurrency: int = 1
    batch_size: int = 1
    errors: int = 0
    extra: dict = dataclasses.field(default_factory=dict)  # server statistics, profile

    @property
    def throughput(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else math.nan

    def p(self, q: float) -> float:
        return percentile(self.latencies_s, q)

    def as_dict(self) -> dict:
        return {"target": self.target, "kind": self.kind, "label": self.label,
                "images": self.images, "wall_s": round(self.wall_s, 3),
                "throughput": round(self.throughput, 4), "p50_s": round(self.p(50), 4),
                "p95_s": round(self.p(95), 4), "p99_s": round(self.p(99), 4),
                "concurrency": self.concurrency, "batch_size": self.batch_size,
                "errors": self.errors, **({"extra": self.extra} if self.extra else {})}
