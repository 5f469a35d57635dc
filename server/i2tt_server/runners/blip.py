"""BLIP captioning, conditional (with a prompt) and unconditional."""

from __future__ import annotations

import dataclasses

from ..text import clean_caption
from .base import CONFIDENCE, Settings
from .prompted import PromptedImageRunner


@dataclasses.dataclass
class BlipSettings(Settings):
    weights: str = "blip-large"
    max_new_tokens: int = 30
    clean_caption: bool = True  # strip BLIP-large's "arafed"-style words


class BlipCaptioner(PromptedImageRunner):
    name = "blip_caption"
    outputs = ("CAPTION", CONFIDENCE)
    settings_class = BlipSettings
    model_class = "BlipForConditionalGeneration"
    processor_class = "BlipProcessor"
    compiled_encoder = "vision_model"
    checkpoints = {"blip-large": "Salesforce/blip-image-captioning-large",
                   "blip-base": "Salesforce/blip-image-captioning-base"}

    def load(self) -> None:
        super().load()
        # The prompt and the generated caption share the text decoder's positions: a prompt
        # beyond what is left fails generate ("index out of range"), for its whole batch.
        self.max_prompt_tokens = (self.model.config.text_config.max_position_embeddings
                                  - self.settings.max_new_tokens)

    def infer_group(self, items, prompt, confidence):
        images = [item.image for item in items]
        text_kwargs = {"text": [prompt] * len(images)} if prompt else {}
        batch = self.processor(images=images, return_tensors="pt", **text_kwargs)
        generated = self.generate(self.model, confidence=confidence, **self.to_device(batch))
        return generated.answers([{"CAPTION": self.caption(c)} for c in
                                  self.processor.batch_decode(generated.sequences,
                                                              skip_special_tokens=True)])

    def caption(self, decoded: str) -> str:
        """The CAPTION of a decoded sequence (the prompt included, as BLIP returns it)."""
        caption = decoded.strip()
        return clean_caption(caption) if self.settings.clean_caption else caption

    def stepped(self):
        from .stepped_blip import SteppedBlip  # it builds on this module

        return SteppedBlip(self)
