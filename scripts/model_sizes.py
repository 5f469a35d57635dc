"""Parameters and weight bytes per model at the dtype it is served in, measured from the
real architectures: each weights folder is built full-size (random values, the public
checkpoint's configuration) and its tensors counted; deploy/README.md's sizing table.

    .venv/bin/python scripts/model_sizes.py                 # builds each folder in a temp dir
    .venv/bin/python scripts/model_sizes.py --weights DIR   # counts an existing weights root
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

from i2tt_server.runners import checkpoints, runner_for_folder
from i2tt_server.weights.synthetic import make_test_weights

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def count_elements(folder: Path) -> int:
    """Elements of every tensor in a folder's safetensors files (their headers only)."""
    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, tensor in header.items():
            if name != "__metadata__":
                elements = 1
                for dim in tensor["shape"]:
                    elements *= dim
                total += elements
    return total


def row(folder: str, path: Path) -> dict:
    runner = runner_for_folder(folder)
    elements = count_elements(path)
    return {"folder": folder, "model": runner.name, "parameters": elements,
            "gpu_dtype": runner.gpu_dtype, "gpu_bytes": elements * BYTES[runner.gpu_dtype],
            "cpu_bytes": elements * BYTES["float32"]}


def measure(weights: Path | None, folders: list[str]) -> list[dict]:
    if weights:
        return [row(folder, weights / folder) for folder in folders]
    rows = []
    for folder in folders:  # one at a time: the largest is several GB on disk
        tmp = Path(tempfile.mkdtemp(prefix="i2tt-sizes-"))
        try:
            make_test_weights(tmp, "full", [folder], log=lambda m: print(m, file=sys.stderr))
            rows.append(row(folder, tmp / folder))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| weights folder | model | parameters | GPU dtype | weights on GPU | weights on CPU (float32) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['folder']}` | `{r['model']}` | {r['parameters'] / 1e6:.1f} M | "
                     f"{r['gpu_dtype']} | {r['gpu_bytes'] / 2**30:.2f} GiB | "
                     f"{r['cpu_bytes'] / 2**30:.2f} GiB |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="count this weights root instead of building")
    parser.add_argument("--models", nargs="+", default=list(checkpoints()),
                        help="weights folders (default: all)")
    args = parser.parse_args(argv)
    print(table(measure(args.weights, args.models)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
