"""The options of one public call, the same for every inference method."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from typing import Any, Callable

ERROR_MODES = ("raise", "return")


@dataclass(frozen=True)
class CallOptions:
    """What one call of an inference method asks for, beyond its inputs.

    - ``timeout``: deadline in seconds of each input's call (default: the client's; 0 for
      none), counted from when that input is taken up: reading or fetching it, every
      attempt and every backoff pause. What is left of it travels with each attempt, so
      the server drops a request whose caller has gone instead of running it.
    - ``errors``: ``"raise"`` (default) raises the first failed input's error (by input
      order) after all inputs are done, with every outcome in ``error.results``;
      ``"return"`` puts the :class:`~i2tt_client.errors.I2TTError` in the failed item's place.
    - ``progress``: show a progress bar on stderr.
    - ``on_result``: ``callback(index, result_or_error)``, called as each input finishes
      (in completion order), e.g. to write results out as they arrive.
    """

    timeout: float | None = None
    errors: str = "raise"
    progress: bool = False
    on_result: Callable[[int, Any], None] | None = None

    def __post_init__(self):
        if self.errors not in ERROR_MODES:
            raise ValueError(f"errors must be one of {ERROR_MODES}, not {self.errors!r}")

    @classmethod
    def of(cls, method: str, keywords: dict) -> "CallOptions":
        """The options given to ``method`` as keyword arguments."""
        unknown = sorted(set(keywords) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"{method}() got an unexpected keyword argument {unknown[0]!r}")
        return cls(**keywords)


def takes_call_options(method: Callable) -> Callable:
    """Marks a method ``(self, ..., **options)`` whose ``options`` are the fields of
    :class:`CallOptions`: its signature (``help()``, ``inspect``) lists them as its
    keyword-only arguments, with their defaults."""
    signature = inspect.signature(method)
    own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    added = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                               annotation=f.type) for f in fields(CallOptions)]
    method.__signature__ = signature.replace(parameters=own + added)
    return method
