"""A runner's image encoder under ``torch.compile`` (the ``compile_encoder`` setting).

The compile is paid at load, before the model reports ready, never by a caller: the encoder
is compiled for one item (what the in-flight path encodes, and a lone static request) and
for a batch (whose size the compiled code then takes as a variable: one graph serves every
batch size from 2 up), by generating for the warm-up items once and twice. After that a
call that would compile again runs the encoder eagerly instead
(``torch.compiler.set_stance("eager_on_recompile")``), so an unforeseen shape costs speed,
never a compile in a caller's time.

Compiled kernels fuse and reorder the encoder's arithmetic, so its states are not bitwise
the eager ones (float32, tiny BLIP: up to 6e-5 apart). Whether answers stay identical is
measured, not assumed: see tests/unit/test_compiled_encoder.py and docs/architecture.md."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("i2tt_server")


def encoder_of(runner):
    """The module ``compile_encoder`` compiles: the runner's ``compiled_encoder`` attribute
    of its model, or ValueError where it has none."""
    if not runner.compiled_encoder:
        raise ValueError(f"compile_encoder: {runner.name} has no image encoder to compile "
                         f"(turn compile_encoder off for it)")
    return getattr(runner.model, runner.compiled_encoder)


def utf8_files() -> None:
    """Files opened without an encoding read as UTF-8 in this process. Triton's stub
    embeds Python without setting its locale from the environment, so it stays "C" and
    such files read as ASCII: torch.compile's own templates (UTF-8) then fail to load."""
    import locale

    for name in ("", "C.UTF-8"):  # the environment's, else the one glibc always has
        if locale.getpreferredencoding(False).lower().replace("-", "") == "utf8":
            return
        try:
            locale.setlocale(locale.LC_CTYPE, name)
        except locale.Error:
            continue


def torch_at_least(major: int, minor: int) -> bool:
    import torch

    return tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (major, minor)


def compile_encoder(runner) -> None:
    """Compile ``runner``'s encoder and warm it up for one item and for a batch."""
    import torch
    import torch._inductor.config as inductor

    module = encoder_of(runner)
    utf8_files()
    # In this process: a pool of compile workers would start sys.executable, which in a
    # Triton model process is the backend's stub, not Python.
    inductor.compile_threads = 1
    # 16-bit activations rounded after each operation as in eager mode, not once per fused
    # kernel: closer to the eager answers the served ones must equal. torch 2.7 (the
    # image's) fails with it ("to_dtype() got an unexpected keyword argument
    # 'use_compute_types'"), and without it 6 of 16 tiny TrOCR lines changed in bfloat16:
    # 16-bit encoders are refused there.
    if runner.dtype in (torch.float16, torch.bfloat16):
        if not torch_at_least(2, 8):
            raise ValueError(f"compile_encoder: {runner.name} in {runner.dtype} needs torch "
                             f"2.8 or later (this torch's compiled 16-bit kernels change "
                             f"answers); use dtype float32 or turn compile_encoder off")
        inductor.emulate_precision_casts = True
    module.compile()
    started = time.perf_counter()
    items = runner.warmup_items()
    for copies in (1, 2):  # one item, then a batch: every later size reuses the batch graph
        runner.infer(items * copies)
    torch.compiler.set_stance("eager_on_recompile")
    log.info("%s: %s compiled in %.0f s", runner.name, runner.compiled_encoder,
             time.perf_counter() - started)
