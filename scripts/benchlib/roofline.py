"""How close the BLIP vision encoder runs to this machine's matmul peak, measured in one
run at one dtype and thread count.

The encoder's floating-point operations are counted by torch's FlopCounterMode on a real
forward pass (matmuls, convolutions, attention products), not estimated from the config;
the peak is the best of a few large square matmuls at the same dtype.
"""

from __future__ import annotations

import time

from .console import log
from .inprocess import dtype_name


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN picks and caches its kernels on the first call
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak_gflops(dtype, device, size: int = 2048, repeats: int = 3) -> float:
    """Best observed GFLOP/s of a size x size x size matmul (2 size^3 operations)."""
    import torch

    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)

    def run():
        with torch.inference_mode():
            torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return 2 * size ** 3 / _best_seconds(run, repeats) / 1e9


def vision_encoder_gflops(model, pixel_values, repeats: int = 2) -> tuple[float, float, float]:
    """(GFLOP per image, seconds per batch, achieved GFLOP/s) of ``model.vision_model`` on
    ``pixel_values`` (a batch, already on the model's device and dtype)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    encoder = model.vision_model
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            encoder(pixel_values=pixel_values)
    flops = counter.get_total_flops()

    def run():
        with torch.inference_mode():
            encoder(pixel_values=pixel_values)
        if pixel_values.device.type == "cuda":
            torch.cuda.synchronize()

    seconds = _best_seconds(run, repeats)
    return flops / len(pixel_values) / 1e9, seconds, flops / seconds / 1e9


def encoder_row(blip, photos: list[bytes], threads: int) -> dict:
    """The BLIP vision encoder's achieved GFLOP/s against a matmul peak, same dtype and
    threads, measured here and now on a batch of ``photos`` (a loaded BlipCaptioner)."""
    images = [blip.image(photo) for photo in photos]
    pixels = blip.to_device(blip.processor(images=images, return_tensors="pt"))["pixel_values"]
    log(f"roofline: BLIP vision encoder at b={len(photos)}, {blip.dtype}, and a matmul peak")
    per_image, seconds, achieved = vision_encoder_gflops(blip.model, pixels)
    peak = matmul_peak_gflops(blip.dtype, blip.device)
    result = {"dtype": dtype_name(blip.dtype), "threads": threads,
              "batch": len(photos), "gflop_per_image": round(per_image, 1),
              "seconds_per_batch": round(seconds, 3), "achieved_gflops": round(achieved, 1),
              "matmul_peak_gflops": round(peak, 1), "fraction_of_peak": round(achieved / peak, 3)}
    print(f"    roofline: {result}", flush=True)
    return result
