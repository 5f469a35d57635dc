"""Resident memory of a running server, per process: tritonserver and each model's
Python-backend stub, after every model has answered one request (deploy/README.md's
CPU sizing). Linux only (reads /proc).

    .venv/bin/python scripts/serve_memory.py --weights build/full-weights
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        for child in map(int, text):
            found += [child, *children(child)]
    return found


def model_of(pid: int) -> str | None:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if not args or not args[0].endswith(b"triton_python_backend_stub"):
        return None
    return Path(args[1].decode()).parent.parent.name  # <repository>/<model>/1/model.py


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--batching", default="cpu", choices=["cpu", "gpu"])
    args = parser.parse_args(argv)
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration")]
    import tritonclient.grpc as grpcclient

    from i2tt_server.launcher import TritonServer, free_port
    from i2tt_server.serve_options import ServeOptions
    from triton_calls import infer

    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (90, 140, 200)).save(buffer, "JPEG")
    photo = buffer.getvalue()
    server = TritonServer(ServeOptions(ROOT / "model_repository", weights=args.weights,
                                       http_port=free_port(), grpc_port=free_port(),
                                       metrics_port=free_port(), host="127.0.0.1",
                                       profile=args.batching,
                                       log_file="/tmp/i2tt-serve-memory.log"))
    with server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        infer(client, "caption_tags", IMAGE=[photo])
        infer(client, "kosmos2_caption", IMAGE=[photo])
        infer(client, "trocr_ocr", IMAGE=[photo])
        client.close()
        rows = [("tritonserver", status(server.process.pid))]
        rows += [(model_of(pid), status(pid)) for pid in children(server.process.pid) if model_of(pid)]
    print("| process | resident memory | peak |\n|---|---|---|")
    for name, values in sorted(rows, key=lambda r: r[0]):
        print(f"| {name} | {values['VmRSS'] / 2**30:.2f} GiB | {values['VmHWM'] / 2**30:.2f} GiB |")
    total = sum(v["VmRSS"] for _, v in rows)
    print(f"| total | {total / 2**30:.2f} GiB | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
