"""The server started exactly as the rendered Kubernetes Deployment starts it (its command
and arguments, deploy/serve.args through the same @file), with /models and /weights
mapped to this checkout's repository and the test weights and the host to loopback:
the probe paths answer, every metric deploy/ reads is exported, and SIGTERM with requests
in flight lets them all finish within the pod's grace period."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from PIL import Image

from deployfiles import (K8S, find, image_files, kubectl, render, server_container,
                         server_metric_names)
from i2tt_server.launcher import free_port
from i2tt_server.metrics import NAMES
from promtext import parse_samples
from testdata import REPOSITORY
from triton_calls import infer, string_input

pytestmark = [pytest.mark.skipif(kubectl() is None, reason="no kubectl with Kustomize 5+ (it renders "
                                 "the Deployment whose arguments this runs)"),
              pytest.mark.timeout(900)]

OVERLAY = K8S / "overlays" / "cpu"  # this machine has no GPU
PORT_OPTIONS = {"--http-port": "http", "--grpc-port": "grpc", "--metrics-port": "metrics"}


def localize(lines: list[str], paths: dict[str, Path], ports: dict[str, int]) -> list[str]:
    """The argument lines with the container's paths, address and ports made local."""
    out, seen = [], set()
    for line in lines:
        name, _, value = line.partition("=")
        if value in paths:
            line, seen = f"{name}={paths[value]}", seen | {value}
        elif name == "--host":
            line, seen = "--host=127.0.0.1", seen | {name}
        elif name in PORT_OPTIONS:
            line, seen = f"{name}={ports[PORT_OPTIONS[name]]}", seen | {name}
        out.append(line)
    assert seen == {*paths, "--host", *PORT_OPTIONS}, f"serve.args changed shape: {lines}"
    return out


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


class Deployed:
    def __init__(self, docs, weights: Path, tmp: Path):
        self.docs = docs
        self.container = server_container(docs)
        self.pod = find(docs, "Deployment")["spec"]["template"]["spec"]
        self.ports = {name: free_port() for name in PORT_OPTIONS.values()}
        self.container_ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        files = image_files()
        args = []
        for arg in self.container["args"]:
            if arg.startswith("@"):  # the file the image carries, made local, read by the launcher
                local = tmp / Path(arg[1:]).name
                lines = files[arg[1:]].read_text().splitlines()
                local.write_text("\n".join(localize(lines, {"/models": REPOSITORY,
                                                            "/weights": weights},
                                                    self.ports)) + "\n")
                arg = f"@{local}"
            args.append(arg)
        (command,) = self.container["command"]
        self.command = [str(Path(sys.executable).parent / command), *args]
        self.log = tmp / "server.log"
        self.process: subprocess.Popen | None = None

    def url(self, port_name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[port_name]}{path}"

    def probe_url(self, probe: str) -> str:
        get_ = self.container[probe]["httpGet"]
        (name,) = [n for n, p in self.container_ports.items()
                   if get_["port"] in (n, p)]
        return self.url(name, get_["path"])

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        probe = self.container["startupProbe"]
        deadline = time.monotonic() + probe["periodSeconds"] * probe["failureThreshold"]
        while get(self.probe_url("startupProbe")) != 200:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready within the startup budget:\n{self.tail()}")
            time.sleep(1)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="module")
def deployed(weights_dir, tmp_path_factory):
    server = Deployed(render(OVERLAY), weights_dir, tmp_path_factory.mktemp("deployed"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def image(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_probe_paths_answer_as_the_manifest_expects(deployed):
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert get(deployed.probe_url(probe)) == 200, probe


def scrape(deployed) -> list:
    with urllib.request.urlopen(deployed.url("metrics", "/metrics"), timeout=10) as response:
        return parse_samples(response.read().decode())


def total(samples, name: str, **labels) -> float:
    return sum(v for n, l, v in samples if n == name and labels.items() <= l.items())


def test_every_metric_that_deploy_reads_is_exported(deployed):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{deployed.ports['grpc']}")
    before = scrape(deployed)
    try:
        infer(client, "caption_tags", IMAGE=[image(1)])
        infer(client, "caption_tags", IMAGE=[image(1)])  # a response-cache hit
        infer(client, "kosmos2_caption", IMAGE=[image(2)])
        infer(client, "trocr_ocr", IMAGE=[image(3)])
        for bad in (b"not an image", b""):
            with pytest.raises(grpcclient.InferenceServerException):
                infer(client, "blip_caption", IMAGE=[bad])
    finally:
        client.close()
    after = scrape(deployed)
    exported = {name for name, _, _ in after}
    # A caller's mistake is counted as refused, never as a server failure (the failure alert
    # adds Triton's failures and the models' INTERNAL answers).
    grew = {name: total(after, name, model="blip_caption") - total(before, name, model="blip_caption")
            for name in ("nv_inference_request_failure", "i2tt_internal_errors_total",
                         "i2tt_rejected_inputs_total")}
    assert grew == {"nv_inference_request_failure": 0, "i2tt_internal_errors_total": 0,
                    "i2tt_rejected_inputs_total": 2}
    wanted = server_metric_names()
    assert {"nv_inference_request_summary_us", "nv_inference_pending_request_count",
            "i2tt_rejected_inputs_total"} <= wanted
    missing = sorted(wanted - exported)
    assert not missing, f"deploy/ reads metrics the server does not export: {missing}"
    assert set(NAMES) <= {n.removesuffix("_count") for n in exported}


def test_sigterm_lets_requests_in_flight_finish_within_the_grace_period(deployed):
    pause = int(deployed.container["lifecycle"]["preStop"]["exec"]["command"][1])
    bound = deployed.pod["terminationGracePeriodSeconds"] - pause  # SIGTERM comes after the pause
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{deployed.ports['grpc']}")
    count = 16
    results: list = [None] * count
    answered = threading.Semaphore(0)
    signalled: dict = {}
    lock = threading.Lock()

    def done(result, error, index):
        with lock:
            results[index] = error if error is not None else result.as_numpy("CAPTION")
            if not signalled:  # the first answer: the others are still in flight, stop now
                # (from this callback, not the test's thread, which a busy machine may wake
                # only after the rest have been answered too)
                signalled["finished"] = sum(r is not None for r in results)
                signalled["at"] = time.monotonic()
                deployed.process.send_signal(signal.SIGTERM)
        answered.release()

    for index in range(count):  # distinct images: none is a cache hit
        client.async_infer("caption_tags", [string_input("IMAGE", [image(100 + index)])],
                           lambda result, error, index=index: done(result, error, index))
    assert answered.acquire(timeout=300), "no answer at all"
    finished_before = signalled["finished"]
    started = signalled["at"]
    try:
        code = deployed.process.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {bound} s after SIGTERM:\n{deployed.tail()}")
    took = time.monotonic() - started
    for _ in range(count - 1):
        assert answered.acquire(timeout=30), "a request got no answer"
    client.close()
    assert finished_before < count, "every request had finished before SIGTERM: nothing was in flight"
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, f"{len(errors)} of {count} accepted requests failed: {errors[0]}"
    assert code == 0, deployed.tail()
    print(f"SIGTERM with {count - finished_before} requests in flight: all answered, "
          f"exit 0 after {took:.1f} s (bound {bound} s)")
