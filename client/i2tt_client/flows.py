"""The logic of one call and of the health checks, written once as flows: generators that
yield the I/O they need (:mod:`i2tt_client.effects`), driven by either client."""

from __future__ import annotations

from typing import Any, Iterable

from . import operations as ops
from .deadlines import Healing, attempt_arguments
from .effects import Blocking, Flow, Rpc, Sleep
from .errors import (AuthenticationError, DeadlineExceededError, I2TTError, ServerError,
                     UnavailableError, from_triton)
from .options import CallOptions
from .results import Health, ModelHealth
from .settings import ClientSettings


def call_flow(op: ops.Operation, item: Any, index: int, settings: ClientSettings,
              options: CallOptions) -> Flow:
    """One input through one model; returns a Result or raises an I2TTError.

    The deadline covers the whole call: reading or fetching the input, every attempt and
    every pause between attempts. Each attempt carries what is left of it to the server.
    A retryable failure (the server down or overloaded) is retried with backoff while
    ``settings.retries`` and the deadline allow; otherwise the last error is raised.
    """
    deadline = settings.deadline(options.timeout)
    limits = settings.limits.within(deadline.remaining())
    data = yield Blocking(op.encode, (item, index, limits))
    attempt, healing = 1, Healing()
    while True:
        absent = settings.absent_outputs.get(op.model, frozenset())
        arguments = {**op.infer_arguments(data, absent), "headers": settings.headers}
        if deadline.remaining() == 0:  # the input's fetch took all of it
            raise DeadlineExceededError(
                f"{op.model}: the {deadline.seconds:g}s deadline passed before the request "
                "could be sent", index=index, model=op.model)
        try:
            if op.needs_config and op.model not in settings.configs:
                reply = yield Rpc("get_model_config", {
                    "model_name": op.model, "as_json": True, "headers": settings.headers,
                    "client_timeout": deadline.remaining()})
                settings.configs[op.model] = reply.get("config", reply)
            response = yield Rpc("infer", {**arguments, **attempt_arguments(deadline)})
        except Exception as exc:
            error = from_triton(exc, index=index, model=op.model)
            lacked = op.lacked_output(str(error))
            if lacked and lacked not in absent:
                # an older server without this optional output: ask again without it (the
                # request was refused before it ran), and from now on never ask for it
                settings.absent_outputs[op.model] = absent | {lacked}
                continue
            if getattr(error, "heals", False) and healing.allows(deadline):
                # a crashed model process: retried on a living one, or after the heal
                yield Sleep(healing.delay())
                attempt += 1
                continue
            if error.retryable and attempt <= settings.retries:
                delay = settings.retry_delay(attempt)
                if deadline.allows(delay):
                    yield Sleep(delay)
                    attempt += 1
                    continue
            error.attempts = attempt
            raise error from None
        try:
            return op.read(response, settings.configs.get(op.model), absent)
        except I2TTError as error:
            error.index = index
            raise


def health_flow(settings: ClientSettings, models: Iterable[str] | None) -> Flow:
    """Liveness, readiness and version of the server, and readiness of each model (by
    default every model the server has)."""
    headers = {"headers": settings.headers, "client_timeout": settings.timeout or None}
    try:
        live = yield Rpc("is_server_live", headers)
        ready = yield Rpc("is_server_ready", headers)
        metadata = yield Rpc("get_server_metadata", headers)
        if models is None:
            models = yield from model_names_flow(headers)
        states = []
        for name in models:
            try:
                model_ready = yield Rpc("is_model_ready", {"model_name": name, **headers})
            except Exception as exc:
                if isinstance(from_triton(exc), UnavailableError):
                    raise
                model_ready = False  # an unknown model is simply not ready
            states.append(ModelHealth(name, bool(model_ready)))
    except Exception as exc:
        return Health(settings.server, False, False, None,
                      [ModelHealth(name, False) for name in models or ()],
                      error=str(from_triton(exc)))
    return Health(settings.server, bool(live), bool(ready), metadata.version, states)


def model_names_flow(headers: dict) -> Flow:
    """The names of the server's models: its repository index, or where that API is closed
    to clients (an I2TT server keeps the model-control APIs to itself), the models its
    statistics list (the loaded ones)."""
    try:
        index = yield Rpc("get_model_repository_index", {**headers, "as_json": True})
        return sorted({m["name"] for m in index.get("models", [])})
    except Exception as exc:
        if not isinstance(from_triton(exc), AuthenticationError):
            raise
    stats = yield Rpc("get_inference_statistics", {**headers, "as_json": True})
    return sorted({m["name"] for m in stats.get("model_stats", [])})


def probe_flow(settings: ClientSettings, method: str, **kwargs) -> Flow:
    """A yes/no health probe: an unreachable server answers no rather than raising."""
    try:
        return bool((yield Rpc(method, {**kwargs, "headers": settings.headers,
                                        "client_timeout": settings.timeout or None})))
    except Exception as exc:
        error = from_triton(exc)
        if isinstance(error, UnavailableError) or (
                method == "is_model_ready" and isinstance(error, ServerError)):
            return False
        raise error from None
