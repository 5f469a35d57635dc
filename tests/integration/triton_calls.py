"""Plain tritonclient calls used by the integration tests (no project client in between)."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient

OUTPUTS = {
    "blip_caption": ["CAPTION"],
    "kosmos2_caption": ["CAPTION", "ENTITIES"],
    "trocr_ocr": ["TEXT"],
    "t5_tags": ["TAGS"],
    "caption_tags": ["CAPTION", "TAGS"],
}


def string_input(name: str, values: list[bytes | str]) -> grpcclient.InferInput:
    array = np.array([v.encode() if isinstance(v, str) else v for v in values],
                     dtype=np.object_).reshape(-1, 1)
    tensor = grpcclient.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def decode(model: str, result) -> list[dict]:
    """One dict per item: strings decoded, TAGS as a list without the empty padding."""
    columns = {name: result.as_numpy(name) for name in OUTPUTS[model]}
    rows = []
    for i in range(len(next(iter(columns.values())))):
        row = {}
        for name, array in columns.items():
            if name == "TAGS":
                row[name] = [t.decode() for t in array[i] if t]
            else:
                row[name] = array[i][0].decode()
        rows.append(row)
    return rows


def infer(client, model: str, **inputs: list) -> list[dict]:
    tensors = [string_input(name, values) for name, values in inputs.items() if values is not None]
    outputs = [grpcclient.InferRequestedOutput(n) for n in OUTPUTS[model]]
    return decode(model, client.infer(model, tensors, outputs=outputs))


def infer_concurrently(client, model: str, requests: list[dict]) -> list:
    """Send every request at once (async_infer) and wait: each result is a list of row
    dicts, or the InferenceServerException that request got."""
    import threading

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
