"""Tags from text with T5 (fabiochiu/t5-base-tag-generation)."""

from __future__ import annotations

import dataclasses

from ..text import clean_tags
from .base import Settings, read_text
from .generative import GenerativeRunner


@dataclasses.dataclass
class T5Settings(Settings):
    weights: str = "t5-tags"
    max_new_tokens: int = 64
    num_beams: int = 8  # as the checkpoint's model card, but deterministic (no sampling)
    max_input_tokens: int = 512  # longer text is truncated, not refused


class T5Tagger(GenerativeRunner):
    name = "t5_tags"
    inputs = ("TEXT",)
    outputs = ("TAGS",)
    sample = "text"  # what the benchmark and load test send it
    settings_class = T5Settings
    gpu_dtype = "bfloat16"  # T5 overflows in float16
    model_class = "T5ForConditionalGeneration"
    processor_class = "AutoTokenizer"
    checkpoints = {"t5-tags": "fabiochiu/t5-base-tag-generation"}

    def parse_one(self, values):
        # Truncated to max_input_tokens anyway; cut the characters first so a huge TEXT
        # costs no more to tokenise than one that fills the limit. A sentencepiece piece
        # spans at most 16 characters (the trainer's default), and runs of spaces collapse:
        # 32 characters per token keep everything the truncation would.
        return read_text(values["TEXT"], "TEXT")[:self.settings.max_input_tokens * 32]

    def stepped(self):
        from .stepped_t5 import SteppedT5  # it builds on this module

        return SteppedT5(self)

    def warmup_items(self):
        return ["a photography of a wooden block on a table"]

    def infer_group(self, items, _key, _confidence):
        batch = self.processor(list(items), max_length=self.settings.max_input_tokens,
                               truncation=True, padding=True, return_tensors="pt")
        generated = self.generate(self.model, **self.to_device(batch))
        raw = self.processor.batch_decode(generated.sequences, skip_special_tokens=True)
        return generated.answers([{"TAGS": clean_tags(r)} for r in raw])
