"""Where a generative runner's model runs and how: device, dtype, torch threads, and the
caps on oneDNN's CPU kernel caches set before its first matmul."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

# oneDNN (torch's CPU kernels for bfloat16 matmuls) keeps every primitive it compiles for
# a tensor shape, twice over: in its own primitive cache and in ideep's LRU cache above it,
# 1024 entries each by default. Generation makes new shapes at every step (batch size x
# tokens so far), so under load a model process fills both and keeps them full. Measured
# with TrOCR in bfloat16, batches of 1-16 lines: tiny weights 375 MB -> 1.36 GB (trocr_ocr
# in the soak: 374 MB -> 1.33 GB), full-size weights 3.4 GB against 1.5 GB capped, at the
# same speed within the noise (0.44 / 0.42 items/s). Caches this small keep the shapes
# every step reuses (the linear layers'); details in docs/load.md ("Memory"). Set before
# the first primitive is compiled, i.e. before a model runs; values already in the
# environment win.
CPU_KERNEL_CACHES = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "128", "LRU_CACHE_CAPACITY": "1"}


def limit_cpu_kernel_caches(environ=os.environ) -> None:
    for name, value in CPU_KERNEL_CACHES.items():
        environ.setdefault(name, value)


def pick_device(requested: str = "auto", instance_kind: str = "", device_id: int = 0):
    import torch

    if requested != "auto":
        return torch.device(requested)
    if instance_kind.upper() != "CPU" and torch.cuda.is_available():
        return torch.device("cuda", device_id)
    return torch.device("cpu")


def cpu_threads() -> int:
    """Half the cores for each model process. Every process would otherwise start one
    OpenMP thread per core, and the ensemble's two steps run at the same time: with more
    threads than cores OpenMP threads spin at barriers and throughput collapses (measured
    2-4x slower on 2 cores, docs/benchmarks/FINDINGS.md). With ``share_cores``, a served
    process takes the cores that the busy processes leave it instead (``CoreShare``)."""
    return max(1, (os.cpu_count() or 2) // 2)


class FixedThreads:
    """The threads set once (a runner used in-process, or ``torch_threads`` configured)."""

    @contextlib.contextmanager
    def busy(self):
        yield

    def refresh(self) -> None:
        pass


class CoreShare:
    """The cores split among a server's model processes that are computing right now,
    instead of half each whatever the others do: a model served alone, or while its
    neighbours are idle (the ensemble's steps at a quiet time), gets every core, and two
    busy ones get half each, as before. Each busy process keeps a marker file (its pid) in
    a directory its server's model processes share; ``refresh`` counts the live ones and
    sets torch's threads to the cores over that count. It is asked at every decoding step
    (the generate loop's logits processor, the in-flight step), so a neighbour that starts
    or stops is seen within a step: more threads than cores slow every process down, and
    fewer leave cores idle. It counts only the server's model processes, so it is for
    cores nothing else computes on (opt-in: ``share_cores``): with another process busy on
    both cores, a step of the tiny T5 took 230 ms on 2 threads against 7.7 on 1. Thread
    counts change no answer: the kernels split their work by rows and columns, not along
    the sums (1 and 2 threads compared equal, float32 and bfloat16, matrix products and
    attention)."""

    def __init__(self, directory: str | os.PathLike, cores: int | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cores = cores or os.cpu_count() or 1
        self.marker = self.directory / str(os.getpid())
        self._depth = 0
        self.threads = 0

    @classmethod
    def of_server(cls) -> CoreShare:
        """The share of the tritonserver that started this model process (its parent)."""
        return cls(Path(tempfile.gettempdir()) / f"i2tt-cores-{os.getppid()}")

    @contextlib.contextmanager
    def busy(self):
        if self._depth == 0:
            self.marker.touch()
        self._depth += 1
        try:
            self.refresh()
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.marker.unlink(missing_ok=True)

    def busy_processes(self) -> int:
        count = 0
        for entry in os.scandir(self.directory):
            try:
                os.kill(int(entry.name), 0)
                count += 1
            except (ValueError, ProcessLookupError):  # a process that died while busy
                Path(entry.path).unlink(missing_ok=True)
            except PermissionError:  # alive, another user's
                count += 1
        return max(1, count)

    def refresh(self) -> None:
        import torch

        threads = max(1, self.cores // self.busy_processes())
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads


# CPU flags that mean native bfloat16 matrix arithmetic (oneDNN then runs bfloat16 matmuls
# at about twice the float32 rate; without them bfloat16 is emulated and slower).
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is absent, e.g. macOS)."""
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def auto_dtype(device_type: str, gpu_dtype: str, flags: frozenset[str] | None = None) -> str:
    """What ``dtype: auto`` means: the runner's half precision on a GPU, bfloat16 on a CPU
    with native bfloat16 (AVX512_BF16 or AMX), float32 elsewhere."""
    if device_type == "cuda":
        return gpu_dtype
    if device_type == "cpu" and BF16_CPU_FLAGS & (cpu_flags() if flags is None else flags):
        return "bfloat16"
    return "float32"


def pick_dtype(device, requested: str, gpu_dtype: str):
    import torch

    return getattr(torch, requested if requested != "auto" else auto_dtype(device.type, gpu_dtype))
