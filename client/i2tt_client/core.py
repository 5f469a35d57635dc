"""The part of the client that does not care whether it runs in threads or in asyncio.

The logic of one call (encode the input, send it, retry while the server is unavailable,
read the answer) and of a health check is written once, as generators that *yield* the
I/O they need (:class:`Rpc`, :class:`Blocking`, :class:`Sleep`) instead of doing it. The
sync client drives them with plain calls (:func:`drive`), the asyncio client with awaits
(:func:`drive_async`). The public methods live once, on :class:`ClientBase`; each returns
whatever the transport's ``_run`` returns — a result, or a coroutine of one.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterable

from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

from . import operations as ops
from .errors import (AuthenticationError, DeadlineExceededError, I2TTError, ServerError,
                     UnavailableError, from_triton)
from .inputs import FetchLimits, is_batch
from .results import Health, ModelHealth, Result

ERROR_MODES = ("raise", "return")


# ---- effects: the I/O a flow asks its driver to do -------------------------------------

@dataclass(frozen=True)
class Rpc:
    """Call a method of the tritonclient client (grpc or grpc.aio: same names)."""

    method: str
    kwargs: dict = field(default_factory=dict)

    def run(self, triton):
        return getattr(triton, self.method)(**self.kwargs)

    async def run_async(self, triton):
        return await getattr(triton, self.method)(**self.kwargs)


@dataclass(frozen=True)
class Blocking:
    """Blocking local work (reading a file, fetching a URL, encoding pixels)."""

    function: Callable
    args: tuple = ()

    def run(self, triton):
        return self.function(*self.args)

    async def run_async(self, triton):
        # Off the event loop: a slow URL must not stall every other request in flight.
        return await asyncio.to_thread(self.function, *self.args)


@dataclass(frozen=True)
class Sleep:
    seconds: float

    def run(self, triton):
        import time

        time.sleep(self.seconds)

    async def run_async(self, triton):
        await asyncio.sleep(self.seconds)


Flow = Generator[Any, Any, Any]


def drive(flow: Flow, triton) -> Any:
    """Run a flow with blocking calls; exceptions go back into the flow where it yielded."""
    value, error = None, None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            value = effect.run(triton)
        except Exception as exc:
            error = exc


async def drive_async(flow: Flow, triton) -> Any:
    """The same as :func:`drive`, awaiting each effect."""
    value, error = None, None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            value = await effect.run_async(triton)
        except Exception as exc:
            error = exc


# ---- deadlines ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Deadline:
    """When one call must be answered by (``seconds`` from its start; None: never)."""

    seconds: float | None
    at: float | None

    @classmethod
    def after(cls, seconds: float | None) -> "Deadline":
        return cls(seconds, None if seconds is None else time.monotonic() + seconds)

    def remaining(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def allows(self, delay: float) -> bool:
        """Whether a pause of ``delay`` seconds still leaves time for another attempt."""
        return self.at is None or time.monotonic() + delay < self.at


def attempt_arguments(deadline: Deadline) -> dict:
    """The deadline of one attempt, for tritonclient: ``client_timeout`` (seconds) ends the
    call here, and ``timeout`` (microseconds) tells the server, whose queue policy then
    drops the request, rather than run it, when its caller has gone."""
    remaining = deadline.remaining()
    if remaining is None:
        return {}
    return {"client_timeout": remaining, "timeout": max(1, int(remaining * 1_000_000))}


# ---- settings shared by both clients ---------------------------------------------------

API_KEY_HEADER = "i2tt-api-key"
# Triton's gRPC frontend checks a restricted protocol's header (`--grpc-restricted-protocol
# =...:i2tt-api-key=KEY`) under this prefixed name; the plain name is what its HTTP
# frontend and proxies in front of the server read.
TRITON_GRPC_HEADER_PREFIX = "triton-grpc-protocol-"


def default_channel_options() -> dict:
    """tritonclient's own channel options. It drops all of them (the message size limits
    included) when given any, so they are restated under the caller's."""
    keepalive = KeepAliveOptions()
    return {"grpc.max_send_message_length": MAX_GRPC_MESSAGE_SIZE,
            "grpc.max_receive_message_length": MAX_GRPC_MESSAGE_SIZE,
            "grpc.keepalive_time_ms": keepalive.keepalive_time_ms,
            "grpc.keepalive_timeout_ms": keepalive.keepalive_timeout_ms,
            "grpc.keepalive_permit_without_calls": keepalive.keepalive_permit_without_calls,
            "grpc.http2.max_pings_without_data": keepalive.http2_max_pings_without_data}


def channel_options(channel_args: list | None, load_balancing: str | None) -> list | None:
    """gRPC channel options: tritonclient's defaults, then ``load_balancing`` (a policy name
    such as ``round_robin``), then the caller's ``channel_args`` (they win)."""
    if channel_args is None and load_balancing is None:
        return None  # tritonclient applies its defaults itself
    options = default_channel_options()
    if load_balancing:
        options["grpc.lb_policy_name"] = load_balancing
    options.update(dict(channel_args or ()))
    return list(options.items())


@dataclass(frozen=True)
class Settings:
    server: str
    headers: dict[str, str] | None = None
    timeout: float | None = None
    max_in_flight: int = 16
    retries: int = 0
    retry_backoff: float = 0.5
    retry_max_delay: float = 10.0
    limits: FetchLimits = FetchLimits()
    # model -> its config (JSON form), fetched once by generic calls to read output shapes
    configs: dict = field(default_factory=dict, compare=False, hash=False)

    def retry_delay(self, attempt: int) -> float:
        """Exponential backoff with jitter, so clients retrying together do not stampede."""
        delay = min(self.retry_max_delay, self.retry_backoff * 2 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)

    def deadline(self, timeout: float | None) -> Deadline:
        """A call's deadline: its own ``timeout``, else the client's (0: none)."""
        seconds = timeout if timeout is not None else self.timeout
        return Deadline.after(seconds or None)


class Healing:
    """How long a call waits out a crashed model process: short pauses (another process of
    the model may serve the next attempt at once; a reload takes seconds), within the
    call's deadline, and at most ``HEAL_WAIT_S`` in all for a call without one."""

    HEAL_WAIT_S = 300.0
    PAUSES = (0.05, 0.1, 0.2, 0.5, 1.0)

    def __init__(self):
        self.started, self.count = time.monotonic(), 0

    def delay(self) -> float:
        pause = self.PAUSES[min(self.count, len(self.PAUSES) - 1)]
        self.count += 1
        return pause * random.uniform(0.5, 1.0)

    def allows(self, deadline: "Deadline") -> bool:
        if time.monotonic() - self.started > self.HEAL_WAIT_S:
            return False
        return deadline.allows(self.PAUSES[min(self.count, len(self.PAUSES) - 1)])


# ---- flows -----------------------------------------------------------------------------

def call_flow(op: ops.Operation, item: Any, index: int, settings: Settings,
              timeout: float | None) -> Flow:
    """One input through one model; returns a Result or raises an I2TTError.

    The deadline covers the whole call: reading or fetching the input, every attempt and
    every pause between attempts. Each attempt carries what is left of it to the server.
    A retryable failure (the server down or overloaded) is retried with backoff while
    ``settings.retries`` and the deadline allow; otherwise the last error is raised.
    """
    deadline = settings.deadline(timeout)
    limits = settings.limits.within(deadline.remaining())
    data = yield Blocking(op.encode, (item, index, limits))
    arguments = {**op.infer_arguments(data), "headers": settings.headers}
    attempt, healing = 1, Healing()
    while True:
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
            return op.read(response, settings.configs.get(op.model))
        except I2TTError as error:
            error.index = index
            raise


def health_flow(settings: Settings, models: Iterable[str] | None) -> Flow:
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


def probe_flow(settings: Settings, method: str, **kwargs) -> Flow:
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


# ---- collecting the answers of a list --------------------------------------------------

class Collector:
    """Results of a list in input order, the progress bar, and the caller's callback."""

    def __init__(self, op_name: str, total: int | None, progress: bool,
                 on_result: Callable[[int, Any], None] | None):
        self.outcomes: dict[int, Any] = {}
        self.on_result = on_result
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=op_name, unit="item", file=sys.stderr,
                            dynamic_ncols=True)

    def add(self, index: int, outcome: Any) -> None:
        self.outcomes[index] = outcome
        if self.bar is not None:
            self.bar.update(1)
        if self.on_result is not None:
            self.on_result(index, outcome)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def finish(self, single: bool, errors: str):
        ordered = [self.outcomes[i] for i in range(len(self.outcomes))]
        if errors == "raise":
            failed = next((o for o in ordered if isinstance(o, I2TTError)), None)
            if failed is not None:
                failed.results = ordered
                raise failed
        return ordered[0] if single else ordered


@dataclass
class Batch:
    """A call's inputs, normalised: one item or a list, and how to report them."""

    op: ops.Operation
    items: Iterable
    single: bool
    total: int | None
    timeout: float | None
    errors: str


def prepare(op: ops.Operation, inputs: Any, timeout: float | None, errors: str) -> Batch:
    if errors not in ERROR_MODES:
        raise ValueError(f"errors must be one of {ERROR_MODES}, not {errors!r}")
    single = not is_batch(inputs)
    items = [inputs] if single else inputs
    total = len(items) if hasattr(items, "__len__") else None
    return Batch(op, items, single, total, timeout, errors)


# ---- the public surface, written once ----------------------------------------------------

class ClientBase:
    """Methods shared by :class:`~i2tt_client.I2TTClient` and
    :class:`~i2tt_client.AsyncI2TTClient`.

    Every inference method takes one input or a list (any iterable) of inputs. One input
    gives one result; a list gives a list of results in input order, sent as concurrent
    requests (at most ``max_in_flight`` at once) so that the server batches them.

    Common keyword arguments:

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

    settings: Settings

    def __init__(self, server: str = "localhost:8001", *, ssl: bool = False,
                 root_certificates: str | None = None, private_key: str | None = None,
                 certificate_chain: str | None = None, api_key: str | None = None,
                 headers: dict[str, str] | None = None, timeout: float | None = None,
                 max_in_flight: int = 16, retries: int = 0, retry_backoff: float = 0.5,
                 url_timeout: float = 10.0, max_url_bytes: int = 20 * 1024 * 1024,
                 load_balancing: str | None = None, channel_args: list | None = None):
        """Connect to the server's gRPC endpoint: ``host:port``, or any gRPC target such as
        ``dns:///i2tt-headless.ns.svc:8001`` (every address the name resolves to).

        ``ssl``/``root_certificates``/``private_key``/``certificate_chain``: TLS, with the
        PEM files' paths (a client cert and key for mutual TLS). ``api_key``: sent with
        every call as ``triton-grpc-protocol-i2tt-api-key`` (the header Triton checks for
        ``--grpc-restricted-protocol=...:i2tt-api-key=KEY``) and as ``i2tt-api-key``. ``headers``: more gRPC metadata for every
        call, e.g. ``{"authorization": "Bearer ..."}``.
        ``timeout``: default deadline of each call in seconds (input fetch, attempts and
        backoff included; the server is told what is left of it). ``retries``/
        ``retry_backoff``: how often and how patiently to retry when the server is
        unavailable or overloaded, never past the deadline.
        ``url_timeout``/``max_url_bytes``: total time and size limits for images given as
        URLs. ``load_balancing``: gRPC load-balancing policy, e.g. ``"round_robin"`` to
        spread calls over every address of a ``dns:///`` target; ``channel_args``: more
        gRPC channel options as ``(key, value)`` pairs.
        """
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        headers = {key.lower(): value for key, value in (headers or {}).items()}
        if api_key is not None:
            if not api_key or api_key != api_key.strip() or "\n" in api_key:
                raise ValueError("api_key must be a non-empty string without surrounding "
                                 "whitespace or line breaks")
            headers[API_KEY_HEADER] = api_key
            headers[TRITON_GRPC_HEADER_PREFIX + API_KEY_HEADER] = api_key
        self.settings = Settings(server=server, headers=headers or None, timeout=timeout,
                                 max_in_flight=max_in_flight, retries=retries,
                                 retry_backoff=retry_backoff,
                                 limits=FetchLimits(url_timeout, max_url_bytes))
        self._connection = {"url": server, "ssl": ssl or bool(root_certificates or certificate_chain),
                            "root_certificates": root_certificates, "private_key": private_key,
                            "certificate_chain": certificate_chain,
                            "channel_args": channel_options(channel_args, load_balancing)}

    @property
    def server(self) -> str:
        return self.settings.server

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.server!r})"

    # The transport supplies these two.
    def _run(self, batch: Batch, progress: bool, on_result):
        raise NotImplementedError

    def _drive(self, flow: Flow):
        raise NotImplementedError

    def _call(self, op: ops.Operation, inputs, timeout, errors, progress, on_result):
        return self._run(prepare(op, inputs, timeout, errors), progress, on_result)

    def caption(self, images, *, prompt: str | None = None, timeout: float | None = None,
                errors: str = "raise", progress: bool = False, on_result=None):
        """Caption image(s) with BLIP -> :class:`~i2tt_client.results.Caption` (the caption
        and its confidence, 0..1).

        ``prompt`` starts the caption (e.g. ``"a photography of"``); images are paths,
        http(s) URLs, bytes, PIL images or numpy arrays.
        """
        return self._call(ops.caption(prompt), images, timeout, errors, progress, on_result)

    def ground(self, images, *, prompt: str | None = None, timeout: float | None = None,
               errors: str = "raise", progress: bool = False, on_result=None):
        """Grounded caption with Kosmos-2 -> :class:`~i2tt_client.results.Grounding`
        (caption plus entities with normalised boxes, and the caption's confidence). The
        server's default prompt is ``"<grounding>An image of"``."""
        return self._call(ops.ground(prompt), images, timeout, errors, progress, on_result)

    def ocr(self, images, *, timeout: float | None = None, errors: str = "raise",
            progress: bool = False, on_result=None):
        """Read one line of text per image with TrOCR -> :class:`~i2tt_client.results.OCRText`
        (the text and its confidence, 0..1)."""
        return self._call(ops.ocr(), images, timeout, errors, progress, on_result)

    def ocr_page(self, images, *, timeout: float | None = None, errors: str = "raise",
                 progress: bool = False, on_result=None):
        """Read whole pages: the server finds the text lines and reads each with TrOCR ->
        :class:`~i2tt_client.results.PageText` (the text, lines in reading order, and each
        line's text, normalised box and confidence). A page without text gives empty text
        and no lines."""
        return self._call(ops.ocr_page(), images, timeout, errors, progress, on_result)

    def tags(self, texts, *, timeout: float | None = None, errors: str = "raise",
             progress: bool = False, on_result=None):
        """Tags for text(s) with T5 -> :class:`~i2tt_client.results.Tags`."""
        return self._call(ops.tags(), texts, timeout, errors, progress, on_result)

    def describe(self, images, *, timeout: float | None = None, errors: str = "raise",
                 progress: bool = False, on_result=None):
        """Caption plus tags of that caption, in one server-side pipeline (the
        ``caption_tags`` ensemble) -> :class:`~i2tt_client.results.Description`."""
        return self._call(ops.describe(), images, timeout, errors, progress, on_result)

    def infer(self, model: str, inputs, *, timeout: float | None = None, errors: str = "raise",
              progress: bool = False, on_result=None):
        """Call any served model: ``inputs`` is a dict of input name -> value for one
        request (or a list of such dicts), the result a dict of output name -> value.

        IMAGE inputs take every image form the typed methods take; other inputs take str
        or bytes. Every output comes back (CONFIDENCE too, where the model has it):
        outputs of variable shape (like TAGS) as lists of strings, numbers (CONFIDENCE)
        as floats, the others as strings (JSON outputs stay JSON text). A model served
        tomorrow is callable today: ``client.infer("t5_tags", {"TEXT": "a dog"})["TAGS"]``.
        """
        return self._call(ops.generic(model), inputs, timeout, errors, progress, on_result)

    def health(self, models: Iterable[str] | None = None):
        """Server live/ready, version and per-model readiness (default: every model the
        server has) -> :class:`~i2tt_client.results.Health`. Never raises for an
        unreachable server: ``live`` is false and ``error`` says why."""
        return self._drive(health_flow(self.settings, None if models is None else tuple(models)))

    def is_live(self):
        return self._drive(probe_flow(self.settings, "is_server_live"))

    def is_ready(self):
        return self._drive(probe_flow(self.settings, "is_server_ready"))

    def is_model_ready(self, model: str):
        return self._drive(probe_flow(self.settings, "is_model_ready", model_name=model))


def settle(op: ops.Operation, error: BaseException, index: int) -> I2TTError:
    """An unexpected exception in one item as that item's error, so it cannot take the
    other items' results with it."""
    if isinstance(error, I2TTError):
        return error
    return ServerError(f"{op.model}: {type(error).__name__}: {error}", index=index, model=op.model)


__all__ = ["ClientBase", "Settings", "Result"]
