"""Plain tritonclient calls used by the integration tests (no project client in between).

Output names and shapes come from the model repository's configs, so a new model is
callable here the day its config exists. A call asks for every output but CONFIDENCE
unless it names its outputs: that is what callers asked for before CONFIDENCE existed, and
answers compared exactly across batches must hold only text (a confidence agrees within a
float tolerance, see test_models.py).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import reference
from testdata import configs, list_outputs

CONFIGS = configs()
OUTPUTS = {name: [o.name for o in config.output] for name, config in CONFIGS.items()}
TEXT_OUTPUTS = {name: [n for n in names if n != "CONFIDENCE"] for name, names in OUTPUTS.items()}
TEXTS = ("a dog running on a beach", "two cats asleep on a red sofa")
SLOW_SECONDS = 3.0  # how long the loopback HTTP server's /slow/ URLs take


def string_input(name: str, values: list[bytes | str]) -> grpcclient.InferInput:
    array = np.array([v.encode() if isinstance(v, str) else v for v in values],
                     dtype=np.object_).reshape(-1, 1)
    tensor = grpcclient.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def decode(model: str, result, outputs: list[str]) -> list[dict]:
    """One dict per item: strings decoded, list outputs (TAGS) without the empty padding,
    numbers (CONFIDENCE) as floats."""
    lists = list_outputs(CONFIGS[model])
    columns = {name: result.as_numpy(name) for name in outputs}
    rows = []
    for i in range(len(next(iter(columns.values())))):
        row = {}
        for name, array in columns.items():
            if name in lists:
                row[name] = [t.decode() for t in array[i] if t]
            elif array.dtype.kind == "f":
                row[name] = float(array[i][0])
            else:
                row[name] = array[i][0].decode()
        rows.append(row)
    return rows


def requested(model: str, outputs: list[str] | None) -> list[str]:
    return TEXT_OUTPUTS[model] if outputs is None else outputs


def infer(client, model: str, outputs: list[str] | None = None, **inputs: list) -> list[dict]:
    tensors = [string_input(name, values) for name, values in inputs.items() if values is not None]
    names = requested(model, outputs)
    outputs = [grpcclient.InferRequestedOutput(n) for n in names]
    return decode(model, client.infer(model, tensors, outputs=outputs), names)


def tolerance(model: str, device: str) -> float:
    """How far (relative) two of ``model``'s confidences for one input may differ when it
    was batched with others in different ways (see reference.confidence_tolerance), at the
    dtype it picks on ``device``. ocr_page's are its lines', which trocr_ocr reads."""
    from i2tt_server.runners import RUNNERS
    from i2tt_server.runners.base import auto_dtype

    reader = "trocr_ocr" if model == "ocr_page" else model
    return reference.confidence_tolerance(auto_dtype(device, RUNNERS[reader].gpu_dtype))


def same_confidence(row: dict, model: str, device: str, abs: float = 0.0):
    """What the CONFIDENCE of another answer to ``row``'s input must equal (it may have been
    batched another way); ``abs`` for one shown rounded."""
    return pytest.approx(row["CONFIDENCE"], rel=tolerance(model, device), abs=abs)


class LinesWithin:
    """Equal to LINES JSON text with these lines, each line's confidence within ``rel``."""

    def __init__(self, text: str, rel: float):
        self.lines = [{**line, "confidence": pytest.approx(line["confidence"], rel=rel)}
                      for line in json.loads(text)]

    def __eq__(self, other) -> bool:
        return isinstance(other, str) and json.loads(other) == self.lines

    def __repr__(self) -> str:
        return repr(self.lines)


def within(rows: list[dict], rel: float) -> list[dict]:
    """``rows`` to compare the answers to the same inputs, batched another way, with
    (``assert got == within(want, rel)``): text exactly, CONFIDENCE and each line's
    confidence within ``rel`` (relative) of these."""
    compared = []
    for row in rows:
        row = dict(row)
        if "CONFIDENCE" in row:
            row["CONFIDENCE"] = pytest.approx(row["CONFIDENCE"], rel=rel)
        if "LINES" in row:
            row["LINES"] = LinesWithin(row["LINES"], rel)
        compared.append(row)
    return compared


def direct_infer(client, model: str, name: str, value: bytes) -> dict:
    """One single-item request for every output; JSON outputs (ENTITIES) parsed."""
    (row,) = infer(client, model, OUTPUTS[model], **{name: [value]})
    if "ENTITIES" in row:
        row["ENTITIES"] = json.loads(row["ENTITIES"])
    return row


def infer_concurrently(client, model: str, requests: list[dict],
                       outputs: list[str] | None = None) -> list:
    """Send every request at once (async_infer) and wait: each result is a list of row
    dicts, or the InferenceServerException that request got."""
    results: list = [None] * len(requests)
    done = threading.Semaphore(0)
    names = requested(model, outputs)
    for index, inputs in enumerate(requests):
        def callback(result, error, index=index):
            results[index] = error if error is not None else decode(model, result, names)
            done.release()
        tensors = [string_input(n, v) for n, v in inputs.items() if v is not None]
        client.async_infer(model, tensors, callback,
                           outputs=[grpcclient.InferRequestedOutput(n) for n in names])
    for _ in requests:
        assert done.acquire(timeout=120), "a request got no answer"
    return results


def requests_seen(triton, model: str) -> int:
    """Requests the server has answered for ``model`` (cache hits and failures included).

    An ensemble's statistics are updated a moment after its response is sent, so read
    until the count has settled.
    """
    def count() -> int:
        stats = triton.statistics(model)["inference_stats"]
        return stats["success"]["count"] + stats["fail"]["count"]

    last = count()
    for _ in range(20):
        time.sleep(0.25)
        now = count()
        if now == last:
            return now
        last = now
    return last


def settled_statistics(triton, model: str) -> dict:
    """The model's statistics once its counts have stopped moving. Triton updates them a
    moment after a response is sent, so on a busy machine a read right after the answers
    can miss the last requests (or, for the next test, count them)."""
    last = triton.statistics(model)
    for _ in range(40):
        time.sleep(0.25)
        now = triton.statistics(model)
        if (now["inference_count"], now["execution_count"]) == \
                (last["inference_count"], last["execution_count"]):
            return now
        last = now
    return last


def scrape(triton) -> str:
    """The server's metrics page (Prometheus text)."""
    url = f"http://127.0.0.1:{triton.options.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def value(samples, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for n, l, v in samples if n == name and labels.items() <= l.items())
