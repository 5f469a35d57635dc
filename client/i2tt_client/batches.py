"""A call's inputs as a list of items, and the answers of that list in input order."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Iterable

from . import operations as ops
from .errors import I2TTError, ServerError
from .inputs import is_batch
from .options import CallOptions


@dataclass
class Batch:
    """A call's inputs, normalised: one item or a list, and the call's options."""

    op: ops.Operation
    items: Iterable
    single: bool
    total: int | None
    options: CallOptions

    @classmethod
    def of(cls, op: ops.Operation, inputs: Any, options: CallOptions) -> "Batch":
        single = not is_batch(inputs)
        items = [inputs] if single else inputs
        total = len(items) if hasattr(items, "__len__") else None
        return cls(op, items, single, total, options)

    def width(self, max_in_flight: int) -> int:
        """How many items to work on at once: one for a single input, else up to
        ``max_in_flight`` and no more than there are items."""
        width = 1 if self.single else max_in_flight
        if self.total is not None:
            width = max(1, min(width, self.total))
        return width


class Collector:
    """Results of a list in input order, the progress bar, and the caller's callback."""

    def __init__(self, batch: Batch):
        self.batch = batch
        self.outcomes: dict[int, Any] = {}
        self.on_result = batch.options.on_result
        self.bar = None
        if batch.options.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=batch.total, desc=batch.op.name, unit="item",
                            file=sys.stderr, dynamic_ncols=True)

    def add(self, index: int, outcome: Any) -> None:
        self.outcomes[index] = outcome
        if self.bar is not None:
            self.bar.update(1)
        if self.on_result is not None:
            self.on_result(index, outcome)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def finish(self):
        ordered = [self.outcomes[i] for i in range(len(self.outcomes))]
        if self.batch.options.errors == "raise":
            failed = next((o for o in ordered if isinstance(o, I2TTError)), None)
            if failed is not None:
                failed.results = ordered
                raise failed
        return ordered[0] if self.batch.single else ordered


def as_item_error(op: ops.Operation, error: BaseException, index: int) -> I2TTError:
    """An unexpected exception in one item as that item's error, so it cannot take the
    other items' results with it."""
    if isinstance(error, I2TTError):
        return error
    return ServerError(f"{op.model}: {type(error).__name__}: {error}", index=index, model=op.model)
