"""One run's plan, resolved once from the command line before anything is measured: the
device, the thread counts of both sides, the targets and their steps, the weights and the
settings every row runs with."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from . import settings
from .targets import measured_models, steps_of
from .weights import ensure_weights


@dataclasses.dataclass(frozen=True)
class Plan:
    options: argparse.Namespace  # the command line, its defaults filled in
    device: str  # cpu | cuda
    default_threads: int  # torch's own default here, before any change
    seed_threads: int  # the seed-style rows
    served_threads: int  # the in-process batched rows and each served model process
    targets: list[str]
    steps: list[str]  # the Python models the targets run
    weights: Path
    configured: dict  # step -> its runner Settings as its config gives them
    parameters: dict[str, dict[str, str]]  # step -> the served parameters, also used in-process

    def served_dtype(self, step: str) -> str:
        return settings.served_dtype(step, self.parameters[step], self.device)

    def config_edits(self):
        """Config edits that serve ``parameters``."""
        return settings.config_edits(self.configured, self.parameters)


def prepare(options: argparse.Namespace) -> Plan:
    from i2tt_server.runners.base import cpu_threads, limit_cpu_kernel_caches

    # Before any model runs here: every row gets the kernel caches of the served processes
    # (runners set them too, but only the first primitive compiled in a process counts).
    limit_cpu_kernel_caches()
    import torch

    device = options.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    default_threads = torch.get_num_threads()  # torch's own default, before any change
    # in-process batched rows: as the served model processes (half the cores on a CPU)
    served_threads = options.torch_threads or (cpu_threads() if device == "cpu"
                                               else torch.get_num_threads())
    torch.set_num_threads(served_threads)
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no GPU")
    overrides = settings.Overrides(
        blip=options.blip or ("large" if device == "cuda" else "base"), device=device,
        torch_threads=options.torch_threads, dtype=options.dtype,
        compile_encoder=options.compile_encoders)
    targets = [t for t in measured_models() if t in options.models]
    steps = sorted({s for t in targets for s in steps_of(t)})
    configured = settings.configured_settings(steps)
    # the settings read the weights' generation config, so the weights come first
    weights = ensure_weights(options.weights, sorted(
        {settings.weights_folder(s, configured[s], overrides.blip) for s in steps}))
    return Plan(options, device, default_threads,
                seed_threads=options.seed_threads or default_threads,
                served_threads=served_threads, targets=targets, steps=steps, weights=weights,
                configured=configured,
                parameters=settings.served_parameters(configured, overrides, weights))
