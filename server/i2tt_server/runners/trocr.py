"""TrOCR: the text of one line of printed or handwritten text."""

from __future__ import annotations

import dataclasses

from .base import CONFIDENCE, Settings, gray_image
from .generative import GenerativeRunner


@dataclasses.dataclass
class TrOCRSettings(Settings):
    weights: str = "trocr-printed"
    max_new_tokens: int = 64


class TrOCRReader(GenerativeRunner):
    name = "trocr_ocr"
    inputs = ("IMAGE",)
    outputs = ("TEXT", CONFIDENCE)
    sample = "line"  # what the benchmark and load test send it
    settings_class = TrOCRSettings
    model_class = "VisionEncoderDecoderModel"
    processor_class = "TrOCRProcessor"
    compiled_encoder = "encoder"
    checkpoints = {"trocr-printed": "microsoft/trocr-base-printed",
                   "trocr-handwritten": "microsoft/trocr-base-handwritten"}

    def parse_one(self, values):
        return self.image(values["IMAGE"])

    def warmup_items(self):
        return [gray_image()]

    def infer_group(self, items, _key, confidence):
        batch = self.processor(images=list(items), return_tensors="pt")
        generated = self.generate(self.model, confidence=confidence, **self.to_device(batch))
        texts = self.processor.batch_decode(generated.sequences, skip_special_tokens=True)
        return generated.answers([{"TEXT": t.strip()} for t in texts])

    def stepped(self):
        from .stepped_trocr import SteppedTrOCR  # it builds on this module

        return SteppedTrOCR(self)
