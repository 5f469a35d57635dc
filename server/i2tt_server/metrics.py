"""The models' own Prometheus metrics (``i2tt_*``), published on Triton's metrics port
through the Python backend's custom-metrics API (``pb_utils.MetricFamily``).

Triton already counts requests, latency, queue time and batches per model; these add what
only the model code knows: why inputs were refused, which requests failed inside the model,
how many tokens were generated, how many items one execution carried, and how long image
decoding took. Triton 2.51 counts every response a Python model answers with an error as a
success (``nv_inference_request_failure`` stays 0), so the two error counters here are the
only record of them. ``MetricsObserver`` is where the Triton adapter's work turns into them.
"""

from __future__ import annotations

from typing import Sequence

REJECTED = "i2tt_rejected_inputs_total"
INTERNAL = "i2tt_internal_errors_total"
GENERATED = "i2tt_generated_tokens_total"
ITEMS = "i2tt_items_per_execution"
DECODE = "i2tt_image_decode_seconds"
# In-flight batching only (batching: inflight): the live sequences, the decoding steps run
# (their rate is steps per second), and how long an item waited for the step loop to take
# it after Triton's own queue (nv_inference_queue_duration_us) handed it over.
RUNNING = "i2tt_running_sequences"
STEPS = "i2tt_decode_steps_total"
STEP_QUEUE = "i2tt_step_queue_seconds"
NAMES = (REJECTED, INTERNAL, GENERATED, ITEMS, DECODE, RUNNING, STEPS, STEP_QUEUE)

ITEM_BUCKETS = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
QUEUE_BUCKETS = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
DECODE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]

# An InvalidInput message -> a small fixed set of label values (label values must stay few).
# First match wins; the phrases are the ones the input checks use.
REASONS = (
    ("missing", ("is required",)),
    ("too_large", ("over the", "decompression bomb", "tokens long;")),
    ("empty", ("is empty", "is blank", "has no pixels")),
    ("undecodable", ("not a decodable image", "could not be decoded")),
    ("bad_text", ("UTF-8", "NUL character")),
    ("shape", ("values but",)),
)


def rejection_reason(message: str) -> str:
    for reason, phrases in REASONS:
        if any(phrase in message for phrase in phrases):
            return reason
    return "other"


class ModelMetrics:
    """One model's metrics; ``create`` gives a no-op stand-in where the backend offers no
    custom metrics (unit tests' fake pb_utils, or a server started without metrics)."""

    @classmethod
    def create(cls, pb, model: str):
        if not hasattr(pb, "MetricFamily"):
            return NoMetrics()
        return cls(pb, model)

    def __init__(self, pb, model: str):
        family = pb.MetricFamily
        self.model = model
        self.families = {
            REJECTED: family(name=REJECTED, kind=family.COUNTER,
                             description="Inputs refused with INVALID_ARG, by model and reason"),
            INTERNAL: family(name=INTERNAL, kind=family.COUNTER,
                             description="Requests answered INTERNAL (the model failed), by model"),
            GENERATED: family(name=GENERATED, kind=family.COUNTER,
                              description="Tokens generated, by model"),
            ITEMS: family(name=ITEMS, kind=family.HISTOGRAM,
                          description="Items (images or texts) carried by one model execution"),
            DECODE: family(name=DECODE, kind=family.HISTOGRAM,
                           description="Seconds spent decoding one request's images"),
            RUNNING: family(name=RUNNING, kind=family.GAUGE,
                            description="Live sequences in the in-flight step loop, by model"),
            STEPS: family(name=STEPS, kind=family.COUNTER,
                          description="In-flight decoding steps run, by model"),
            STEP_QUEUE: family(name=STEP_QUEUE, kind=family.HISTOGRAM,
                               description="Seconds an item waited for the in-flight step "
                                           "loop to admit it"),
        }
        labels = {"model": model}
        self._internal = self.families[INTERNAL].Metric(labels=labels)
        self._generated = self.families[GENERATED].Metric(labels=labels)
        self._items = self.families[ITEMS].Metric(labels=labels, buckets=ITEM_BUCKETS)
        self._decode = self.families[DECODE].Metric(labels=labels, buckets=DECODE_BUCKETS)
        self._running = self.families[RUNNING].Metric(labels=labels)
        self._steps = self.families[STEPS].Metric(labels=labels)
        self._step_queue = self.families[STEP_QUEUE].Metric(labels=labels,
                                                            buckets=QUEUE_BUCKETS)
        # Created on first use, so /metrics lists only reasons that happened, plus "other"
        # (always there, so dashboards and tests find the family before any rejection).
        self._rejected = {}
        self._rejected_metric("other")

    def _rejected_metric(self, reason: str):
        if reason not in self._rejected:
            self._rejected[reason] = self.families[REJECTED].Metric(
                labels={"model": self.model, "reason": reason})
        return self._rejected[reason]

    def rejected(self, message: str) -> None:
        self._rejected_metric(rejection_reason(message)).increment(1.0)

    def failed(self, requests: int) -> None:
        self._internal.increment(float(requests))

    def executed(self, items: int) -> None:
        self._items.observe(float(items))

    def generated(self, tokens: int) -> None:
        if tokens > 0:
            self._generated.increment(float(tokens))

    def decoded(self, seconds: float) -> None:
        self._decode.observe(seconds)

    def running(self, sequences: int) -> None:
        self._running.set(float(sequences))

    def stepped(self) -> None:
        self._steps.increment(1.0)

    def step_queued(self, seconds: float) -> None:
        self._step_queue.observe(seconds)

    def close(self) -> None:
        # Triton requires every Metric to go before its MetricFamily.
        self._rejected.clear()
        self._internal = self._generated = self._items = self._decode = None
        self._running = self._steps = self._step_queue = None
        self.families.clear()


class NoMetrics:
    def rejected(self, message: str) -> None:
        pass

    def failed(self, requests: int) -> None:
        pass

    def executed(self, items: int) -> None:
        pass

    def generated(self, tokens: int) -> None:
        pass

    def decoded(self, seconds: float) -> None:
        pass

    def running(self, sequences: int) -> None:
        pass

    def stepped(self) -> None:
        pass

    def step_queued(self, seconds: float) -> None:
        pass

    def close(self) -> None:
        pass


class MetricsObserver:
    """An execution's events (``execution.ExecutionObserver``) and, when served in flight,
    the step loop's (``step_scheduler.SchedulerObserver``) -> the model's metrics: the one
    place the adapter's work reaches ModelMetrics."""

    def __init__(self, metrics, decodes_images: bool):
        self.metrics, self.decodes_images = metrics, decodes_images
        self.live = 0  # the step loop's live sequences (its hooks come from its one thread)

    def parsed(self, records: Sequence, seconds: float) -> None:
        if self.decodes_images:
            self.metrics.decoded(seconds)
        for record in records:
            if record.code == "INVALID_ARG":
                self.metrics.rejected(record.error)

    def inferred(self, records: Sequence, generated_tokens: int) -> None:
        self.metrics.executed(sum(len(record.items) for record in records))
        self.metrics.generated(generated_tokens)
        failed = sum(1 for record in records if record.failed)
        if failed:
            self.metrics.failed(failed)

    def crashed(self, requests: int) -> None:
        self.metrics.failed(requests)

    def answered(self, record) -> None:
        """An in-flight request got its answer (its items were stepped one by one)."""
        if record.code == "INTERNAL":
            self.metrics.failed(1)

    # -- the step loop's hooks (SchedulerObserver) ----------------------------------------
    def admitted(self, n: int) -> None:
        self._live(n)

    def queued(self, seconds: list[float]) -> None:
        for value in seconds:
            self.metrics.step_queued(value)

    def step(self, running: int, seconds: float) -> None:
        # One forward over ``running`` sequences: one token each (beam search advances a
        # request's beams as one sequence and counts one token, as generate's output does).
        self.metrics.stepped()
        self.metrics.executed(running)
        self.metrics.generated(running)

    def finished(self, n: int) -> None:
        self._live(-n)

    def dropped(self, n: int) -> None:
        self._live(-n)

    def _live(self, change: int) -> None:
        self.live += change
        self.metrics.running(self.live)
