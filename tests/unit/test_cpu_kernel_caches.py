"""A model process's memory holds while the shapes it computes keep changing: oneDNN's
kernel caches, which otherwise keep up to 2 x 1024 compiled bfloat16 primitives (about a
gigabyte in one trocr_ocr process), are capped before the first one is built
(``runners.base.CPU_KERNEL_CACHES``; docs/load.md, "Memory")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from i2tt_server.runners.base import BF16_CPU_FLAGS, CPU_KERNEL_CACHES, cpu_flags, \
    limit_cpu_kernel_caches

# Batches of 1..16 line images through generate: every batch size and every step's length
# is a new matmul shape, so the caches fill within a few dozen calls.
DRIVER = """
import json, random, resource, sys
from PIL import Image
from i2tt_server.runners.trocr import TrOCRReader
reader = TrOCRReader.from_parameters({"weights_root": sys.argv[1], "dtype": "bfloat16",
                                      "torch_threads": "1", "warmup": "false"},
                                     instance_kind="CPU")
rng = random.Random(0)
images = [Image.new("RGB", (rng.randint(100, 500), rng.randint(20, 60)), "white")
          for _ in range(20)]
reader.infer(images[:1], True)
def rss_mb():
    # /proc rather than psutil: the container image's environment has no psutil
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20
before = rss_mb()
for call in range(40):
    reader.infer([rng.choice(images) for _ in range(1 + call % 16)], True)
print(json.dumps({"growth_mb": rss_mb() - before}))
"""


def test_the_caps_are_defaults_an_operator_can_override():
    environ = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "4096"}
    limit_cpu_kernel_caches(environ)
    assert environ == {**CPU_KERNEL_CACHES, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "4096"}


def growth_mb(weights_dir, **env) -> float:
    environ = {k: v for k, v in os.environ.items() if k not in CPU_KERNEL_CACHES}
    result = subprocess.run([sys.executable, "-c", DRIVER, str(weights_dir)],
                            env={**environ, **env}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])["growth_mb"]


@pytest.mark.skipif(not BF16_CPU_FLAGS & cpu_flags(),
                    reason="no native bfloat16 on this CPU: its matmuls do not go through "
                           "oneDNN's bfloat16 kernels")
def test_a_model_process_holds_its_memory_under_changing_shapes(weights_dir):
    capped = growth_mb(weights_dir)
    # measured: +0 to +60 MB capped, +800 MB with oneDNN's and ideep's default 1024 entries
    assert capped < 200
    uncapped = growth_mb(weights_dir, ONEDNN_PRIMITIVE_CACHE_CAPACITY="1024",
                         LRU_CACHE_CAPACITY="1024")
    assert uncapped > capped + 300, (capped, uncapped)
