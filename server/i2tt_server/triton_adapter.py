"""The Triton Python-backend glue: a thin shell around a Runner.

For each dynamic batch: decode every request's inputs (a bad one gets its own INVALID_ARG
response and is left out), run ONE ``runner.infer`` over all good items (which groups them
by prompt and makes one batched generate per group), then scatter one response per
request, in order. It never raises out of ``execute`` and always returns one response per
request.
"""

from __future__ import annotations

import json
import logging
import traceback

import numpy as np

from .errors import InvalidInput
from .runners.base import Runner

log = logging.getLogger("i2tt_server")


def to_bytes_list(array: np.ndarray) -> list[bytes]:
    """A TYPE_STRING input tensor ([n, 1] of bytes) as a flat list."""
    return [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1).tolist()]


def output_array(values: list) -> np.ndarray:
    """Per-item output values as a TYPE_STRING tensor: [n, 1] for strings, [n, k] for lists
    (shorter lists padded with empty strings, which the client drops)."""
    if values and isinstance(values[0], list):
        width = max(1, max(len(v) for v in values))
        rows = [[s.encode() for s in v] + [b""] * (width - len(v)) for v in values]
        return np.array(rows, dtype=np.object_).reshape(len(values), width)
    return np.array([v.encode() for v in values], dtype=np.object_).reshape(len(values), 1)


def triton_model(runner_class: type[Runner]):
    """Build the ``TritonPythonModel`` class for a runner (model.py re-exports it)."""

    class TritonPythonModel:
        def initialize(self, args):
            import triton_python_backend_utils as pb_utils

            self.pb = pb_utils
            config = json.loads(args["model_config"])
            params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
            self.runner = runner_class.from_parameters(
                params, instance_kind=args.get("model_instance_kind", ""),
                device_id=int(args.get("model_instance_device_id", 0) or 0))
            log.info("%s ready on %s", runner_class.name, self.runner.device)

        def execute(self, requests):
            pb = self.pb
            responses: list = [None] * len(requests)
            items, owners = [], []  # owners[i]: (request index, item count)
            for index, request in enumerate(requests):
                try:
                    tensors = {}
                    for name in runner_class.inputs:
                        tensor = pb.get_input_tensor_by_name(request, name)
                        tensors[name] = None if tensor is None else to_bytes_list(tensor.as_numpy())
                    request_items = self.runner.parse(tensors)
                except InvalidInput as exc:
                    responses[index] = self.error(str(exc), pb.TritonError.INVALID_ARG)
                    continue
                except Exception as exc:  # a decoder bug must still cost only this request
                    log.error("%s: parsing failed: %s", runner_class.name, traceback.format_exc())
                    responses[index] = self.error(f"could not read inputs: {exc}",
                                                  pb.TritonError.INVALID_ARG)
                    continue
                owners.append((index, len(request_items)))
                items.extend(request_items)

            if items:
                try:
                    results = self.runner.infer(items)
                except Exception as exc:
                    log.error("%s: inference failed: %s", runner_class.name, traceback.format_exc())
                    for index, _ in owners:
                        responses[index] = self.error(f"inference failed: {exc}",
                                                      pb.TritonError.INTERNAL)
                    return responses
                start = 0
                for index, count in owners:
                    mine = results[start:start + count]
                    start += count
                    responses[index] = pb.InferenceResponse(output_tensors=[
                        pb.Tensor(name, output_array([r[name] for r in mine]))
                        for name in runner_class.outputs])
            return responses

        def error(self, message: str, code):
            return self.pb.InferenceResponse(
                error=self.pb.TritonError(f"{runner_class.name}: {message}", code))

        def finalize(self):
            self.runner = None

    TritonPythonModel.__name__ = f"TritonPythonModel[{runner_class.name}]"
    return TritonPythonModel
