"""The in-process rows: the seed-style baseline and the batched ceiling.

Seed style is how the seed notebook calls the models: transformers classes directly,
``processor(image)`` -> ``model.generate(**inputs)`` -> ``decode``, one image at a time,
fp32 (``dtype`` can be changed for a GPU comparison). The generation settings are the
served ones (max_new_tokens, num_beams, greedy), so both sides do the same work.

The ceiling runs the served code itself (the i2tt_server runners) in batches, without
Triton: what the hardware can do with no serving overhead at all. The same batches again
with ``confidence`` show what computing CONFIDENCE costs (generate keeping every step's
scores).
"""

from __future__ import annotations

import gc
import io
import json
import time
from pathlib import Path
from typing import Callable

from .stats import Row

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"

def pinned_new_tokens(folder: Path) -> int | None:
    """max_new_tokens when the weights pin their length (min == max in generation_config)."""
    path = Path(folder) / "generation_config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    low, high = config.get("min_new_tokens"), config.get("max_new_tokens")
    return high if low is not None and low == high else None


def steps_of(model: str) -> list[str]:
    """The Python models a served model runs, in order (an ensemble runs several)."""
    from i2tt_server.repository import ensemble_steps, read_config

    return ensemble_steps(read_config(REPOSITORY / model))


def input_of(model: str) -> tuple[str, str]:
    """(payload kind, input name) of a served model: what its first step reads."""
    from i2tt_server.runners import RUNNERS

    runner = RUNNERS[steps_of(model)[0]]
    return runner.sample, runner.inputs[0]


def _open(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")  # as the seed: Image.open(...).convert


class SeedStyle:
    """One model step called the seed notebook's way. ``settings``: the served parameters."""

    def __init__(self, step: str, path, settings: dict[str, str], device: str, dtype):
        import torch
        from i2tt_server.runners import RUNNERS

        self.step, self.device, self.dtype = step, torch.device(device), dtype
        self.max_new_tokens = int(settings["max_new_tokens"])
        self.num_beams = int(settings.get("num_beams", "1"))
        self.prompt = "<grounding>An image of"
        if step == "t5_tags":
            self.max_input_tokens = int(settings.get("max_input_tokens", "512"))
        # the same transformers classes the runners load, called directly below
        self.processor, model = RUNNERS[step].load_pretrained(path, dtype=dtype)
        self.model = model.to(self.device)

    def _inputs(self, batch):
        return {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                for k, v in batch.items()}

    def __call__(self, value):
        """image bytes (or text for T5) -> text, exactly one generate call."""
        import torch

        generate = dict(max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                        do_sample=False)
        with torch.inference_mode():
            if self.step == "t5_tags":
                inputs = self.processor(value, return_tensors="pt", truncation=True,
                                        max_length=self.max_input_tokens)
                out = self.model.generate(**self._inputs(inputs), **generate)
                return [t.strip() for t in self.processor.decode(out[0], skip_special_tokens=True).split(",")]
            image = _open(value)
            if self.step == "kosmos2_caption":
                inputs = self._inputs(self.processor(text=self.prompt, images=image,
                                                     return_tensors="pt"))
                out = self.model.generate(**inputs, **generate)
                raw = self.processor.batch_decode(out, skip_special_tokens=False)[0]
                return self.processor.post_process_generation(raw)[0]
            inputs = self._inputs(self.processor(images=image, return_tensors="pt"))
            out = self.model.generate(**inputs, **generate)
            return self.processor.batch_decode(out, skip_special_tokens=True)[0].strip()


def load_steps(target: str, factory: Callable[[str], object]) -> list:
    return [factory(step) for step in steps_of(target)]


def release(*objects) -> None:
    del objects
    gc.collect()


def run_seed_style(target: str, steps: list, payload: Callable[[int], object], n: int,
                   label: str, offset: int = 0) -> Row:
    """``n`` requests one after another, each through every step (caption, then tags)."""
    _chain(steps, payload(offset + n + 7))  # warm-up on an input not measured
    latencies = []
    start = time.perf_counter()
    for i in range(offset, offset + n):
        t0 = time.perf_counter()
        _chain(steps, payload(i))
        latencies.append(time.perf_counter() - t0)
    return Row(target, "seed", label, n, time.perf_counter() - start, latencies)


def _chain(steps, value):
    for step in steps:
        value = step(value)
        if isinstance(value, list):  # T5 tags are the last step
            break
    return value


class TimedRunner:
    """An i2tt_server runner whose generate calls are timed (for the profile)."""

    def __init__(self, runner):
        self.runner = runner
        self.generate_s = 0.0
        original = runner.generate

        def timed(model, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(model, **kwargs)
            finally:
                self.generate_s += time.perf_counter() - t0

        runner.generate = timed


def run_batched(target: str, runners: list[TimedRunner], payload: Callable[[int], object],
                input_name: str, batch_size: int, batches: int, offset: int = 0,
                warmup: bool = True, confidence: bool = False) -> Row:
    """``batches`` batches of ``batch_size`` distinct inputs through the runners; every
    item of a batch gets the batch's latency. ``extra`` splits the time into decoding
    (parse), generate and the rest of infer (processor, post-processing). ``confidence``:
    each runner computes CONFIDENCE too (the row's kind is then ``inprocess-confidence``)."""
    def once(base: int) -> dict[str, float]:
        split = {"parse_s": 0.0, "infer_s": 0.0, "generate_s": 0.0}
        values = [payload(base + k) for k in range(batch_size)]
        name = input_name
        for timed in runners:
            before = timed.generate_s
            t0 = time.perf_counter()
            items = timed.runner.parse({name: [v.encode() if isinstance(v, str) else v
                                               for v in values]})
            t1 = time.perf_counter()
            results = timed.runner.infer(items, confidence)
            t2 = time.perf_counter()
            split["parse_s"] += t1 - t0
            split["infer_s"] += t2 - t1
            split["generate_s"] += timed.generate_s - before
            values, name = [r[timed.runner.outputs[0]] for r in results], "TEXT"
        return split

    if warmup:
        once(offset + 10_000)  # allocator, oneDNN kernels
    latencies, totals = [], {"parse_s": 0.0, "infer_s": 0.0, "generate_s": 0.0}
    start = time.perf_counter()
    for b in range(batches):
        t0 = time.perf_counter()
        split = once(offset + b * batch_size)
        latencies += [time.perf_counter() - t0] * batch_size
        for key in totals:
            totals[key] += split[key]
    wall = time.perf_counter() - start
    per_batch = {key: round(value / batches, 4) for key, value in totals.items()}
    kind, label = ("inprocess-confidence", f"in-process batched, b={batch_size}, with CONFIDENCE") \
        if confidence else ("inprocess", f"in-process batched, b={batch_size}")
    return Row(target, kind, label, batch_size * batches, wall, latencies,
               batch_size=batch_size, extra={"per_batch": per_batch})
