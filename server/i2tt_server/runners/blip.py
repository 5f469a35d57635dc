"""BLIP captioning, conditional (with a prompt) and unconditional."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from PIL import Image

from ..batching import group_indices
from ..text import clean_caption
from .base import Runner, Settings, gray_image, text


@dataclasses.dataclass
class BlipSettings(Settings):
    weights: str = "blip-large"
    max_new_tokens: int = 30
    clean_caption: bool = True  # strip BLIP-large's "arafed"-style words


class BlipItem(NamedTuple):
    image: Image.Image
    prompt: str | None


class BlipCaptioner(Runner):
    name = "blip_caption"
    inputs = ("IMAGE", "PROMPT")
    outputs = ("CAPTION",)
    settings_class = BlipSettings

    def parse_one(self, values):
        return BlipItem(self.image(values["IMAGE"]), text(values.get("PROMPT"), "PROMPT", False))

    def warmup_items(self):
        return [BlipItem(gray_image(), None)]

    def infer(self, items):
        captions: list[str] = [""] * len(items)
        for prompt, indices in group_indices(item.prompt for item in items).items():
            captions_of_group = self.caption([items[i].image for i in indices], prompt)
            for index, caption in zip(indices, captions_of_group):
                captions[index] = caption
        return [{"CAPTION": c} for c in captions]

    def caption(self, images: list[Image.Image], prompt: str | None) -> list[str]:
        """One batched generate for images sharing one prompt (or none)."""
        text_kwargs = {"text": [prompt] * len(images)} if prompt else {}
        batch = self.processor(images=images, return_tensors="pt", **text_kwargs)
        generated = self.generate(self.model, **self.to_device(batch))
        captions = self.processor.batch_decode(generated, skip_special_tokens=True)
        captions = [c.strip() for c in captions]
        if self.settings.clean_caption:
            captions = [clean_caption(c) for c in captions]
        return captions
