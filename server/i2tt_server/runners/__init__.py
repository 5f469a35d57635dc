"""Plain-Python model logic: load, preprocess, one batched generate, postprocess.

Each runner is usable without Triton (tests, benchmarks, notebooks); the Triton adapter
only moves tensors in and out of it. ``RUNNERS`` is the registry every table of model
facts (weights folders, checkpoints, transformers classes) is derived from.

The layers: ``base.Runner`` (the facts, parsing, grouping, ``infer`` over the groups);
``generative.GenerativeRunner`` (loading a transformers model, device and dtype from
``device``, the batched generate and its token count), under it
``prompted.PromptedImageRunner`` (IMAGE + optional PROMPT: BLIP, Kosmos-2), TrOCR and T5;
``ocr_page.PageReader`` beside the generative runners (its lines are read by a line
reader it is given). ``inflight`` is the contract of in-flight (iteration-level)
batching, ``stepped`` its encoder-decoder half and ``stepped_t5``, ``stepped_trocr`` and
``stepped_blip`` the models' halves (``GenerativeRunner.stepped``).
"""

from __future__ import annotations

from .base import Runner
from .blip import BlipCaptioner
from .kosmos2 import Kosmos2Grounder
from .ocr_page import PageReader
from .t5_tags import T5Tagger
from .trocr import TrOCRReader

RUNNERS: dict[str, type[Runner]] = {
    cls.name: cls for cls in (BlipCaptioner, Kosmos2Grounder, TrOCRReader, T5Tagger, PageReader)}


def checkpoints() -> dict[str, str]:
    """Every known weights folder -> its public checkpoint."""
    return {folder: hub for runner in RUNNERS.values() for folder, hub in runner.checkpoints.items()}


def runner_for_folder(folder: str) -> type[Runner]:
    """The runner whose model a weights folder holds."""
    for runner in RUNNERS.values():
        if folder in runner.checkpoints:
            return runner
    raise KeyError(f"unknown weights folder {folder!r}; known: {', '.join(checkpoints())}")


def default_folders() -> list[str]:
    """The folder each runner with weights loads unless its config names another."""
    return [runner.default_folder() for runner in RUNNERS.values() if runner.checkpoints]


__all__ = ["RUNNERS", "Runner", "BlipCaptioner", "Kosmos2Grounder", "TrOCRReader", "T5Tagger",
           "PageReader", "checkpoints", "runner_for_folder", "default_folders"]
