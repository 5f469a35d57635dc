"""The Triton Python-backend glue: a thin shell around a Runner (``TritonModel``).

For each dynamic batch, a pipeline over one record per request (``execution``): answer
requests whose caller has gone (cancelled) without work, read and decode every request's
inputs (a bad one gets its own INVALID_ARG response and is left out), run ONE
``runner.infer`` over all good items (which groups them by prompt and makes one batched
generate per group; split in halves if it raises), then scatter one response per request,
in order, holding the outputs that request asked for (CONFIDENCE is computed only when one
of the batch's requests asked for it). The observer (``MetricsObserver``) is told of each
step. It never raises out of ``execute`` and always returns one response per request.

With ``batching: inflight`` the same reading and parsing hands the items to a step loop
instead (``inflight_adapter``), which answers each request through its response sender.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import InvalidInput
from .execution import CANCELLED, INVALID_ARG, RequestRecord, infer_in_halves
from .inflight_adapter import InflightServing
from .metrics import MetricsObserver, ModelMetrics
from .runners.base import CONFIDENCE, Runner
from .runners.device import CoreShare

log = logging.getLogger("i2tt_server")


def to_bytes_list(array: np.ndarray) -> list[bytes]:
    """A TYPE_STRING input tensor ([n, 1] of bytes) as a flat list."""
    return [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1).tolist()]


def output_array(values: list) -> np.ndarray:
    """Per-item output values as a tensor: TYPE_FP32 [n, 1] for numbers (CONFIDENCE), else
    TYPE_STRING, [n, 1] for strings, [n, k] for lists (shorter lists padded with empty
    strings, which the client drops)."""
    if values and isinstance(values[0], float):
        return np.array(values, dtype=np.float32).reshape(len(values), 1)
    if values and isinstance(values[0], list):
        width = max(1, max(len(v) for v in values))
        rows = [[s.encode() for s in v] + [b""] * (width - len(v)) for v in values]
        return np.array(rows, dtype=np.object_).reshape(len(values), width)
    return np.array([v.encode() for v in values], dtype=np.object_).reshape(len(values), 1)


class TritonModel:
    """Base of every Python-backend model: its ``model.py`` subclasses it and names the
    runner, e.g. ``class TritonPythonModel(TritonModel): runner_class = BlipCaptioner``.

    ``pb_utils`` is imported in ``initialize`` (it exists only inside the backend stub), so
    the class imports anywhere and unit tests can hand it a fake.
    """

    runner_class: type[Runner]

    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        self.setup(pb_utils, args)

    def setup(self, pb_utils, args) -> None:
        self.pb = pb_utils
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.runner = self.make_runner(
            self.runner_class.settings_class.from_parameters(params),
            instance_kind=args.get("model_instance_kind", ""),
            device_id=int(args.get("model_instance_device_id", 0) or 0))
        if getattr(self.runner.settings, "share_cores", False):  # with its neighbours
            self.runner.share_cores(CoreShare.of_server())
        self.metrics = ModelMetrics.create(pb_utils, self.name)
        self.observer = MetricsObserver(self.metrics, "IMAGE" in self.runner_class.inputs)
        self.pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1),
                                       thread_name_prefix="decode")
        self.inflight = self.serve_in_flight(self.runner.settings)
        log.info("%s ready on %s (%s batching)", self.name, self.runner.device,
                 "in-flight" if self.inflight else "static")

    def serve_in_flight(self, settings) -> InflightServing | None:
        """The in-flight path where the config asks for it (``batching: inflight``),
        warmed up through its step loop like the static path is through generate."""
        if getattr(settings, "batching", "static") != "inflight":
            return None
        serving = InflightServing(self, self.runner.stepped(), settings.max_running,
                                  self.observer)
        if settings.warmup:
            for future in [serving.scheduler.submit(item)
                           for item in self.runner.warmup_items()]:
                future.result()
        return serving

    def make_runner(self, settings, **placement) -> Runner:
        """The runner, from its settings and where Triton placed this instance."""
        return self.runner_class(settings, **placement)

    @property
    def name(self) -> str:
        return self.runner_class.name

    def execute(self, requests):
        if self.inflight is not None:
            return self.inflight.execute(requests)  # answers through the response senders
        try:
            return self.run_requests(requests)
        except Exception as exc:  # never raise out of execute: Triton would fail them all
            log.error("%s: %s", self.name, traceback.format_exc())
            self.observer.crashed(len(requests))
            return [self.error(f"internal error: {exc}", self.pb.TritonError.INTERNAL)
                    for _ in requests]

    def run_requests(self, requests) -> list:
        """One response per request, in order: the pipeline over one record each."""
        records = [RequestRecord(request) for request in requests]
        live = [record for record in records if not self.skip_cancelled(record)]
        if live:
            self.read_inputs(live)
            parsed = self.parse_inputs(live)
            if parsed:
                confidence = any(CONFIDENCE in record.outputs for record in parsed)
                tokens = infer_in_halves(self.runner, parsed, confidence, self.name)
                self.observer.inferred(parsed, tokens)
        return [self.respond(record) for record in records]

    def skip_cancelled(self, record: RequestRecord) -> bool:
        """Whether the caller gave up (deadline passed, call cancelled) while this request
        waited in the queue; then nobody reads the answer, so no work is done for it."""
        try:
            cancelled = bool(record.request.is_cancelled())
        except Exception:  # older Python backends cannot tell (no such method)
            cancelled = False
        if cancelled:
            record.fail(CANCELLED, "cancelled: the caller has gone")
        return cancelled

    def read_inputs(self, records: list[RequestRecord]) -> None:
        """Each request's outputs asked for and input tensors. Tensors are read here, on
        the backend's thread; decoding runs in parallel across requests (parse_inputs)."""
        for record in records:
            record.outputs = self.requested(record.request)
            try:
                record.inputs = self.read(record.request)
            except Exception as exc:
                record.fail(INVALID_ARG, f"could not read inputs: {type(exc).__name__}: {exc}")

    def parse_inputs(self, records: list[RequestRecord]) -> list[RequestRecord]:
        """Decode the requests' items (mostly image decompression, which releases the
        GIL, so in threads); the records that parsed."""
        started = time.perf_counter()
        if len(records) > 1:
            list(self.pool.map(self.parse, records))
        else:
            self.parse(records[0])
        self.observer.parsed(records, time.perf_counter() - started)
        return [record for record in records if not record.failed]

    def requested(self, request) -> list[str]:
        """The outputs to send back, in the config's order: those the request asked for.
        Triton fills in the names (measured on 2.51): a caller that names no outputs asks
        for all of them, CONFIDENCE included; an ensemble's step is asked only for the
        outputs its output_map names; a BLS request for what it names."""
        try:
            asked = set(request.requested_output_names())
        except AttributeError:  # a backend that cannot tell: every output, as before
            return list(self.runner_class.outputs)
        return [name for name in self.runner_class.outputs if name in asked]

    def read(self, request) -> dict[str, list[bytes] | None]:
        values = {}
        for name in self.runner_class.inputs:
            tensor = self.pb.get_input_tensor_by_name(request, name)
            values[name] = None if tensor is None else to_bytes_list(tensor.as_numpy())
        return values

    def parse(self, record: RequestRecord) -> None:
        """The request's items, or the error that makes it INVALID_ARG."""
        if record.failed:
            return
        started = time.perf_counter()
        try:
            record.items = self.runner.parse(record.inputs)
        except InvalidInput as exc:
            record.fail(INVALID_ARG, str(exc))
        except Exception as exc:  # a decoder bug must still cost only this request
            log.error("%s: parsing failed: %s", self.name, traceback.format_exc())
            record.fail(INVALID_ARG, f"could not read inputs: {type(exc).__name__}: {exc}")
        record.timings["parse"] = time.perf_counter() - started

    def respond(self, record: RequestRecord):
        """The request's response: its error, or the outputs it asked for."""
        pb = self.pb
        if record.failed:
            # CANCELLED is missing from older Python backends; UNAVAILABLE is the closest
            return self.error(record.error, getattr(pb.TritonError, record.code,
                                                    pb.TritonError.UNAVAILABLE))
        return pb.InferenceResponse(output_tensors=[
            pb.Tensor(name, output_array([result[name] for result in record.results]))
            for name in record.outputs])

    def error(self, message: str, code):
        return self.pb.InferenceResponse(error=self.pb.TritonError(f"{self.name}: {message}", code))

    def finalize(self):
        if self.inflight is not None:
            self.inflight.close()
        self.pool.shutdown(wait=False)
        self.metrics.close()
        self.runner = None
