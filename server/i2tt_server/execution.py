"""One execution's requests as records, without Triton: what each request asked for, its
inputs and items, its outcome (results or an error) and how long its steps took; the
inference over all of them; and the events an observer (the metrics, later tracing) sees.

A request that fails never harms its batch: a bad input fails that request alone, and if
inference raises, the requests are split in halves and each half retried, down to the
single request that fails, so one poisonous request costs the others only some retries.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from typing import Any, Protocol, Sequence

log = logging.getLogger("i2tt_server")

# The error a record's outcome can be, by the TritonError code its response carries.
CANCELLED, INVALID_ARG, INTERNAL, UNAVAILABLE = \
    "CANCELLED", "INVALID_ARG", "INTERNAL", "UNAVAILABLE"


@dataclasses.dataclass
class RequestRecord:
    """One request on its way through one execution."""

    request: Any
    outputs: list[str] = dataclasses.field(default_factory=list)  # asked for, config order
    inputs: dict[str, list[bytes] | None] | None = None  # input name -> values (None: absent)
    items: list[Any] | None = None  # parsed: what the runner infers
    results: list[dict[str, Any]] | None = None  # one dict of output values per item
    error: str | None = None  # the error response's message ...
    code: str | None = None  # ... and its code (CANCELLED, INVALID_ARG, ...)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # step -> seconds

    def fail(self, code: str, message: str) -> None:
        self.code, self.error = code, message

    @property
    def failed(self) -> bool:
        return self.error is not None


class ExecutionObserver(Protocol):
    """What happens to one execution's requests, told as it happens (``MetricsObserver``
    turns it into the model's metrics)."""

    def parsed(self, records: Sequence[RequestRecord], seconds: float) -> None:
        """The live requests were parsed (the failed ones refused), in ``seconds`` in all."""

    def inferred(self, records: Sequence[RequestRecord], generated_tokens: int) -> None:
        """The parsed requests went through inference (the failed ones hold INTERNAL)."""

    def crashed(self, requests: int) -> None:
        """The execution itself failed: every one of its ``requests`` answers INTERNAL."""


def infer_in_halves(runner, records: Sequence[RequestRecord], confidence: bool,
                    model: str) -> int:
    """Each record's results, from one inference over all their items; if it raises,
    split the records in halves and retry each, so only the failing one gets the error.
    Returns the tokens generated for the results."""
    if not records:
        return 0
    started = time.perf_counter()
    try:
        answers = runner.infer([item for record in records for item in record.items],
                               confidence)
    except Exception as exc:
        if len(records) == 1:
            log.error("%s: inference failed: %s", model, traceback.format_exc())
            records[0].fail(INTERNAL, f"inference failed: {exc}")
            return 0
        middle = len(records) // 2
        return (infer_in_halves(runner, records[:middle], confidence, model)
                + infer_in_halves(runner, records[middle:], confidence, model))
    seconds, start = time.perf_counter() - started, 0
    for record in records:
        record.results = answers[start:start + len(record.items)]
        record.timings["infer"] = seconds
        start += len(record.items)
    return answers.generated_tokens
