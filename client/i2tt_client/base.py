"""The public methods of both clients, written once.

Each inference method builds its call's :class:`~i2tt_client.options.CallOptions` once and
hands the transport a :class:`~i2tt_client.batches.Batch`; each method returns whatever the
transport's ``_run`` (or ``_drive``) returns — a result, or a coroutine of one.
"""

from __future__ import annotations

from typing import Iterable

from . import operations as ops
from .batches import Batch
from .effects import Flow
from .flows import health_flow, probe_flow
from .inputs import FetchLimits
from .options import CallOptions, takes_call_options
from .settings import ClientSettings, call_headers, channel_options


class ClientBase:
    """Methods shared by :class:`~i2tt_client.I2TTClient` and
    :class:`~i2tt_client.AsyncI2TTClient`.

    Every inference method takes one input or a list (any iterable) of inputs. One input
    gives one result; a list gives a list of results in input order, sent as concurrent
    requests (at most ``max_in_flight`` at once) so that the server batches them.

    Every inference method also takes the keyword arguments of
    :class:`~i2tt_client.options.CallOptions`: ``timeout``, ``errors``, ``progress`` and
    ``on_result``.
    """

    settings: ClientSettings

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
        self.settings = ClientSettings(server=server, headers=call_headers(headers, api_key),
                                       timeout=timeout, max_in_flight=max_in_flight,
                                       retries=retries, retry_backoff=retry_backoff,
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
    def _run(self, batch: Batch):
        raise NotImplementedError

    def _drive(self, flow: Flow):
        raise NotImplementedError

    def _call(self, method: str, op: ops.Operation, inputs, options: dict):
        options = CallOptions.of(f"{ClientBase.__qualname__}.{method}", options)
        return self._run(Batch.of(op, inputs, options))

    @takes_call_options
    def caption(self, images, *, prompt: str | None = None, **options):
        """Caption image(s) with BLIP -> :class:`~i2tt_client.results.Caption` (the caption
        and its confidence, 0..1).

        ``prompt`` starts the caption (e.g. ``"a photography of"``); images are paths,
        http(s) URLs, bytes, PIL images or numpy arrays.
        """
        return self._call("caption", ops.caption(prompt), images, options)

    @takes_call_options
    def ground(self, images, *, prompt: str | None = None, **options):
        """Grounded caption with Kosmos-2 -> :class:`~i2tt_client.results.Grounding`
        (caption plus entities with normalised boxes, and the caption's confidence). The
        server's default prompt is ``"<grounding>An image of"``."""
        return self._call("ground", ops.ground(prompt), images, options)

    @takes_call_options
    def ocr(self, images, **options):
        """Read one line of text per image with TrOCR -> :class:`~i2tt_client.results.OCRText`
        (the text and its confidence, 0..1)."""
        return self._call("ocr", ops.ocr(), images, options)

    @takes_call_options
    def ocr_page(self, images, **options):
        """Read whole pages: the server finds the text lines and reads each with TrOCR ->
        :class:`~i2tt_client.results.PageText` (the text, lines in reading order, and each
        line's text, normalised box and confidence). A page without text gives empty text
        and no lines."""
        return self._call("ocr_page", ops.ocr_page(), images, options)

    @takes_call_options
    def tags(self, texts, **options):
        """Tags for text(s) with T5 -> :class:`~i2tt_client.results.Tags`."""
        return self._call("tags", ops.tags(), texts, options)

    @takes_call_options
    def describe(self, images, **options):
        """Caption plus tags of that caption, in one server-side pipeline (the
        ``caption_tags`` ensemble) -> :class:`~i2tt_client.results.Description`."""
        return self._call("describe", ops.describe(), images, options)

    @takes_call_options
    def infer(self, model: str, inputs, **options):
        """Call any served model: ``inputs`` is a dict of input name -> value for one
        request (or a list of such dicts), the result a dict of output name -> value.

        IMAGE inputs take every image form the typed methods take; other inputs take str
        or bytes. Every output comes back (CONFIDENCE too, where the model has it):
        outputs of variable shape (like TAGS) as lists of strings, numbers (CONFIDENCE)
        as floats, the others as strings (JSON outputs stay JSON text). A model served
        tomorrow is callable today: ``client.infer("t5_tags", {"TEXT": "a dog"})["TAGS"]``.
        """
        return self._call("infer", ops.generic(model), inputs, options)

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
