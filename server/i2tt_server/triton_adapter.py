"""The Triton Python-backend glue: a thin shell around a Runner (``TritonModel``).

For each dynamic batch: answer requests whose caller has gone (cancelled) without work,
decode every request's inputs (a bad one gets its own INVALID_ARG response and is left
out), run ONE ``runner.infer`` over all good items (which groups them by prompt and makes
one batched generate per group), then scatter one response per request, in order, holding
the outputs that request asked for (CONFIDENCE is computed only when one of the batch's
requests asked for it). If that inference raises, the batch is split in halves and each
half retried, down to the single request that fails, so one poisonous request costs the
others only some retries. It never raises out of ``execute`` and always returns one
response per request.
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
from .metrics import ModelMetrics
from .runners.base import CONFIDENCE, Runner

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
        self.runner = self.runner_class.from_parameters(
            params, instance_kind=args.get("model_instance_kind", ""),
            device_id=int(args.get("model_instance_device_id", 0) or 0))
        self.metrics = ModelMetrics.create(pb_utils, self.name)
        self.pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1),
                                       thread_name_prefix="decode")
        log.info("%s ready on %s", self.name, self.runner.device)

    @property
    def name(self) -> str:
        return self.runner_class.name

    def execute(self, requests):
        try:
            return self.answer(requests)
        except Exception as exc:  # never raise out of execute: Triton would fail them all
            log.error("%s: %s", self.name, traceback.format_exc())
            self.metrics.failed(len(requests))
            return [self.error(f"internal error: {exc}", self.pb.TritonError.INTERNAL)
                    for _ in requests]

    def answer(self, requests):
        pb = self.pb
        responses: list = [None] * len(requests)
        live = []
        for index, request in enumerate(requests):
            if self.cancelled(request):
                responses[index] = self.error("cancelled: the caller has gone",
                                              getattr(pb.TritonError, "CANCELLED",
                                                      pb.TritonError.UNAVAILABLE))
            else:
                live.append(index)
        if not live:
            return responses
        # Tensors are read here, on the backend's thread; decoding (mostly image
        # decompression, which releases the GIL) runs in parallel across requests.
        tensors = [self.read(requests[i]) for i in live]
        wanted = {i: self.requested(requests[i]) for i in live}
        started = time.perf_counter()
        parsed = list(self.pool.map(self.parse, tensors)) if len(tensors) > 1 \
            else [self.parse(tensors[0])]
        if "IMAGE" in self.runner_class.inputs:
            self.metrics.decoded(time.perf_counter() - started)
        owners = []  # (request index, its items), in order
        for index, result in zip(live, parsed):
            if isinstance(result, Exception):
                responses[index] = self.error(str(result), pb.TritonError.INVALID_ARG)
                self.metrics.rejected(str(result))
            else:
                owners.append((index, result))
        if not owners:
            return responses
        self.metrics.executed(sum(len(items) for _, items in owners))
        tokens_before = self.runner.generated_tokens
        outcomes = self.infer_owners(owners, any(CONFIDENCE in wanted[i] for i, _ in owners))
        self.metrics.generated(self.runner.generated_tokens - tokens_before)
        failed = 0
        for index, outcome in outcomes.items():
            if isinstance(outcome, Exception):
                failed += 1
                responses[index] = self.error(f"inference failed: {outcome}",
                                              pb.TritonError.INTERNAL)
            else:
                responses[index] = pb.InferenceResponse(output_tensors=[
                    pb.Tensor(name, output_array([r[name] for r in outcome]))
                    for name in wanted[index]])
        if failed:
            self.metrics.failed(failed)
        return responses

    def infer_owners(self, owners: list[tuple[int, list]],
                     confidence: bool) -> dict[int, list | Exception]:
        """Each request's results, from one inference over all their items; if it raises,
        split the requests in halves and retry each, so only the failing one gets the error."""
        if not owners:
            return {}
        try:
            results = self.runner.infer([item for _, items in owners for item in items],
                                        confidence)
        except Exception as exc:
            if len(owners) == 1:
                log.error("%s: inference failed: %s", self.name, traceback.format_exc())
                return {owners[0][0]: exc}
            middle = len(owners) // 2
            return {**self.infer_owners(owners[:middle], confidence),
                    **self.infer_owners(owners[middle:], confidence)}
        outcome, start = {}, 0
        for index, items in owners:
            outcome[index] = results[start:start + len(items)]
            start += len(items)
        return outcome

    @staticmethod
    def cancelled(request) -> bool:
        """Whether the caller gave up (deadline passed, call cancelled) while this request
        waited in the queue; then nobody reads the answer, so no work is done for it."""
        try:
            return bool(request.is_cancelled())
        except Exception:  # older Python backends cannot tell (no such method)
            return False

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

    def read(self, request) -> dict[str, list[bytes] | None] | Exception:
        try:
            values = {}
            for name in self.runner_class.inputs:
                tensor = self.pb.get_input_tensor_by_name(request, name)
                values[name] = None if tensor is None else to_bytes_list(tensor.as_numpy())
            return values
        except Exception as exc:
            return InvalidInput(f"could not read inputs: {type(exc).__name__}: {exc}")

    def parse(self, tensors):
        """The request's items, or the exception that makes it INVALID_ARG."""
        if isinstance(tensors, Exception):
            return tensors
        try:
            return self.runner.parse(tensors)
        except InvalidInput as exc:
            return exc
        except Exception as exc:  # a decoder bug must still cost only this request
            log.error("%s: parsing failed: %s", self.name, traceback.format_exc())
            return InvalidInput(f"could not read inputs: {type(exc).__name__}: {exc}")

    def error(self, message: str, code):
        return self.pb.InferenceResponse(error=self.pb.TritonError(f"{self.name}: {message}", code))

    def finalize(self):
        self.pool.shutdown(wait=False)
        self.metrics.close()
        self.runner = None
