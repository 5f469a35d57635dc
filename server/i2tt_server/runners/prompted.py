"""What BLIP and Kosmos-2 share: an IMAGE with an optional PROMPT, the prompt checked
against the text positions the model leaves for it, and items grouped by prompt."""

from __future__ import annotations

from typing import ClassVar, NamedTuple

from PIL import Image

from .base import gray_image, read_text
from .generative import GenerativeRunner


class PromptedImage(NamedTuple):
    image: Image.Image
    prompt: str | None  # None: the model's own unconditional start


class PromptedImageRunner(GenerativeRunner):
    """Subclasses set ``self.max_prompt_tokens`` in ``load`` (what the model's positions
    leave for a prompt) and may name a ``default_prompt`` for items sent without one."""

    inputs = ("IMAGE", "PROMPT")
    default_prompt: ClassVar[str | None] = None
    max_prompt_tokens: int

    def parse_one(self, values) -> PromptedImage:
        prompt = read_text(values.get("PROMPT"), "PROMPT", False)
        if prompt is not None:
            self.check_tokens(prompt, "PROMPT", self.max_prompt_tokens)
        return PromptedImage(self.image(values["IMAGE"]), prompt or self.default_prompt)

    def warmup_items(self) -> list[PromptedImage]:
        return [PromptedImage(gray_image(), self.default_prompt)]

    def group_key(self, item: PromptedImage):
        # Prompts of different lengths padded into one batch change the answers.
        return item.prompt
