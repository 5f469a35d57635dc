"""The served rows: derived model repositories, the server, and a closed-loop driver.

The driver runs ``concurrency`` threads, each with its own tritonclient gRPC client,
each sending one request at a time until the level's request count is used up; every
request has distinct bytes and its latency is measured around ``client.infer``.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .stats import Row

def outputs_of(server, model: str) -> list[str]:
    """The model's output names, as the running server has them."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server) as client:
        config = client.get_model_config(model, as_json=True)["config"]
    return [o["name"] for o in config["output"]]


def make_request(input_name: str, value):
    import tritonclient.grpc as grpcclient

    data = value.encode() if isinstance(value, str) else value
    tensor = grpcclient.InferInput(input_name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    return [tensor]


def drive(url: str, model: str, input_name: str, payload: Callable[[int], object],
          requests: int, concurrency: int, offset: int = 0, timeout_s: float = 3600.0):
    """Returns (wall seconds, latencies, errors): ``requests`` requests over ``concurrency``
    workers, each with one request in flight at a time."""
    import tritonclient.grpc as grpcclient

    counter = itertools.count(offset)
    last = offset + requests
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    outputs = [grpcclient.InferRequestedOutput(name) for name in outputs_of(url, model)]
    clients = [grpcclient.InferenceServerClient(url) for _ in range(concurrency)]
    start_gate = threading.Barrier(concurrency + 1)

    def worker(client):
        start_gate.wait()
        while True:
            with lock:
                i = next(counter)
            if i >= last:
                return
            inputs = make_request(input_name, payload(i))  # built outside the timed span
            t0 = time.perf_counter()
            try:
                client.infer(model, inputs, outputs=outputs, client_timeout=timeout_s)
            except Exception as exc:  # counted and reported, never hidden
                with lock:
                    errors.append(str(exc)[:200])
                continue
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    start_gate.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    for client in clients:
        client.close()
    return wall, latencies, errors


STAT_KEYS = ("queue", "compute_input", "compute_infer", "compute_output", "success")


def snapshot(server, models: list[str]) -> dict:
    """Cumulative Triton statistics of ``models`` (counts and nanoseconds)."""
    out = {}
    for model in models:
        stats = server.statistics(model)
        infer = stats.get("inference_stats", {})
        out[model] = {"inference_count": int(stats.get("inference_count", 0)),
                      "execution_count": int(stats.get("execution_count", 0)),
                      **{key: int(infer.get(key, {}).get("ns", 0)) for key in STAT_KEYS}}
    return out


def stats_delta(before: dict, after: dict) -> dict:
    """Per model over one level: mean batch size and mean per-request milliseconds in the
    queue and in execute() (compute_infer covers decoding, preprocessing and generate)."""
    out = {}
    for model, b in before.items():
        a = after[model]
        inferences = a["inference_count"] - b["inference_count"]
        executions = a["execution_count"] - b["execution_count"]
        if not inferences:
            continue
        row = {"requests": inferences, "executions": executions,
               "mean_batch": round(inferences / max(executions, 1), 2)}
        for key in ("queue", "compute_input", "compute_infer", "compute_output", "success"):
            row[f"{key}_ms"] = round((a[key] - b[key]) / inferences / 1e6, 2)
        out[model] = row
    return out


def served_row(server, target: str, steps: tuple[str, ...], input_name: str,
               payload: Callable[[int], object], requests: int, concurrency: int,
               kind: str, label: str, offset: int) -> Row:
    before = snapshot(server, [target, *steps] if target not in steps else list(steps))
    wall, latencies, errors = drive(server.grpc_url, target, input_name, payload, requests,
                                    concurrency, offset)
    after = snapshot(server, list(before))
    if errors:
        print(f"  {len(errors)} errors, first: {errors[0]}")
    return Row(target, kind, label, len(latencies), wall, latencies, concurrency=concurrency,
               errors=len(errors), extra={"triton": stats_delta(before, after)})


def start_server(repository: Path, weights: Path, log_file: Path, timeout: float = 1800.0,
                 cache_size: int = 0):
    from i2tt_server.launcher import TritonServer, free_port
    from i2tt_server.serve_options import ServeOptions

    # Distinct image bytes per request keep every measured request a cache miss; the cache
    # only answers the rows that repeat one image on purpose.
    server = TritonServer(ServeOptions(repository, weights=weights, http_port=free_port(),
                                       grpc_port=free_port(), metrics_port=free_port(),
                                       host="127.0.0.1", cache_size=cache_size,
                                       log_file=log_file))
    return server.start(timeout=timeout)
