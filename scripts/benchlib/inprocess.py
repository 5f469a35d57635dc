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
import time
from typing import Callable

from .stats import Row


def _open(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")  # as the seed: Image.open(...).convert


# The seed notebook's Kosmos-2 prompt.
SEED_PROMPT = "<grounding>An image of"


class SeedStyle:
    """One model step called the seed notebook's way. ``settings``: the served parameters.
    What the call does follows the runner's facts: a runner sent text (``sample``) tags
    it, one that answers ENTITIES grounds its caption, the others caption an image."""

    def __init__(self, step: str, path, settings: dict[str, str], device: str, dtype):
        import torch
        from i2tt_server.runners import RUNNERS

        runner = RUNNERS[step]
        self.step, self.device, self.dtype = step, torch.device(device), dtype
        self.max_new_tokens = int(settings["max_new_tokens"])
        self.num_beams = int(settings.get("num_beams", "1"))
        if runner.sample == "text":
            self.max_input_tokens = int(settings.get("max_input_tokens", "512"))
            self._call = self._tags
        else:
            self._call = self._grounded_caption if "ENTITIES" in runner.outputs else self._caption
        # the same transformers classes the runners load, called directly below
        self.processor, model = runner.load_pretrained(path, dtype=dtype)
        self.model = model.to(self.device)

    def _inputs(self, batch):
        return {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                for k, v in batch.items()}

    def _generate(self, inputs):
        return self.model.generate(**self._inputs(inputs), max_new_tokens=self.max_new_tokens,
                                   num_beams=self.num_beams, do_sample=False)

    def __call__(self, value):
        """image bytes (or text for T5) -> text, exactly one generate call."""
        import torch

        with torch.inference_mode():
            return self._call(value)

    def _tags(self, text: str) -> list[str]:
        inputs = self.processor(text, return_tensors="pt", truncation=True,
                                max_length=self.max_input_tokens)
        out = self._generate(inputs)
        return [t.strip() for t in self.processor.decode(out[0], skip_special_tokens=True).split(",")]

    def _grounded_caption(self, data: bytes):
        out = self._generate(self.processor(text=SEED_PROMPT, images=_open(data),
                                            return_tensors="pt"))
        raw = self.processor.batch_decode(out, skip_special_tokens=False)[0]
        return self.processor.post_process_generation(raw)[0]

    def _caption(self, data: bytes) -> str:
        out = self._generate(self.processor(images=_open(data), return_tensors="pt"))
        return self.processor.batch_decode(out, skip_special_tokens=True)[0].strip()


def unload_models(models: list) -> None:
    """Empties ``models`` and collects the garbage, so the memory of the models it held is
    free before the next ones load (a TimedRunner's wrapped generate is a reference cycle,
    which only the collector frees)."""
    models.clear()
    gc.collect()


def dtype_name(dtype) -> str:
    """``torch.bfloat16`` -> ``bfloat16``."""
    return str(dtype).replace("torch.", "")


def joined_dtypes(names) -> str:
    """The distinct dtype names, in order, joined by "/" (a label's dtype part)."""
    return "/".join(dict.fromkeys(names))


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
