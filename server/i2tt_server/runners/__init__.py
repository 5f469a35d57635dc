"""Plain-Python model logic: load, preprocess, one batched generate, postprocess.

Each runner is usable without Triton (tests, benchmarks, notebooks); the Triton adapter
only moves tensors in and out of it.
"""

from .blip import BlipCaptioner
from .kosmos2 import Kosmos2Grounder
from .t5_tags import T5Tagger
from .trocr import TrOCRReader

RUNNERS = {cls.name: cls for cls in (BlipCaptioner, Kosmos2Grounder, TrOCRReader, T5Tagger)}

__all__ = ["RUNNERS", "BlipCaptioner", "Kosmos2Grounder", "TrOCRReader", "T5Tagger"]
