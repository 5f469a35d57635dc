"""Plain tritonclient calls used by the integration tests (no project client in between).

Output names and shapes come from the model repository's configs, so a new model is
callable here the day its config exists.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient

from testdata import configs, list_outputs

CONFIGS = configs()
OUTPUTS = {name: [o.name for o in config.output] for name, config in CONFIGS.items()}
TEXTS = ("a dog running on a beach", "two cats asleep on a red sofa")
SLOW_SECONDS = 3.0  # how long the loopback HTTP server's /slow/ URLs take


def string_input(name: str, values: list[bytes | str]) -> grpcclient.InferInput:
    array = np.array([v.encode() if isinstance(v, str) else v for v in values],
                     dtype=np.object_).reshape(-1, 1)
    tensor = grpcclient.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def decode(model: str, result) -> list[dict]:
    """One dict per item: strings decoded, list outputs (TAGS) without the empty padding."""
    lists = list_outputs(CONFIGS[model])
    columns = {name: result.as_numpy(name) for name in OUTPUTS[model]}
    rows = []
    for i in range(len(next(iter(columns.values())))):
        row = {}
        for name, array in columns.items():
            if name in lists:
                row[name] = [t.decode() for t in array[i] if t]
            else:
                row[name] = array[i][0].decode()
        rows.append(row)
    return rows


def infer(client, model: str, **inputs: list) -> list[dict]:
    tensors = [string_input(name, values) for name, values in inputs.items() if values is not None]
    outputs = [grpcclient.InferRequestedOutput(n) for n in OUTPUTS[model]]
    return decode(model, client.infer(model, tensors, outputs=outputs))


def direct_infer(client, model: str, name: str, value: bytes) -> dict:
    """One single-item request; JSON outputs (ENTITIES) parsed."""
    (row,) = infer(client, model, **{name: [value]})
    if "ENTITIES" in row:
        row["ENTITIES"] = json.loads(row["ENTITIES"])
    return row


def infer_concurrently(client, model: str, requests: list[dict]) -> list:
    """Send every request at once (async_infer) and wait: each result is a list of row
    dicts, or the InferenceServerException that request got."""
    results: list = [None] * len(requests)
    done = threading.Semaphore(0)
    for index, inputs in enumerate(requests):
        def callback(result, error, index=index):
            results[index] = error if error is not None else decode(model, result)
            done.release()
        tensors = [string_input(n, v) for n, v in inputs.items() if v is not None]
        client.async_infer(model, tensors, callback,
                           outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS[model]])
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
