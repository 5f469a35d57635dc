"""Kosmos-2 grounded captioning: a caption plus the phrases in it with their boxes."""

from __future__ import annotations

import dataclasses
import json
from .base import CONFIDENCE, Settings, gray_image
from .prompted import PromptedImageRunner

DEFAULT_PROMPT = "<grounding>An image of"


@dataclasses.dataclass
class Kosmos2Settings(Settings):
    weights: str = "kosmos-2"
    max_new_tokens: int = 64
    # Kosmos-2's prompts are short ("<grounding>An image of", a phrase to ground); every
    # prompt token costs time in each generate step of its whole batch, so longer ones are
    # refused (and never beyond the positions the image and the caption leave).
    max_prompt_tokens: int = 64


def entities_json(entities) -> str:
    """Kosmos-2's (phrase, (start, end), [(x1, y1, x2, y2), ...]) tuples as JSON objects,
    boxes normalised to 0..1 of the image's width and height."""
    return json.dumps([{"phrase": phrase, "span": [start, end],
                        "boxes": [[round(float(v), 6) for v in box] for box in boxes]}
                       for phrase, (start, end), boxes in entities])


class Kosmos2Grounder(PromptedImageRunner):
    name = "kosmos2_caption"
    outputs = ("CAPTION", "ENTITIES", CONFIDENCE)
    settings_class = Kosmos2Settings
    model_class = "Kosmos2ForConditionalGeneration"
    processor_class = "Kosmos2Processor"
    compiled_encoder = "vision_model"
    checkpoints = {"kosmos-2": "microsoft/kosmos-2-patch14-224"}
    default_prompt = DEFAULT_PROMPT

    def load(self) -> None:
        super().load()
        # The image's tokens, the prompt and the caption share the text positions.
        processed = self.processor(text=[DEFAULT_PROMPT], images=[gray_image()])
        image_and_markers = len(processed["input_ids"][0]) - self.count_tokens(DEFAULT_PROMPT)
        left = (self.model.config.text_config.max_position_embeddings - image_and_markers
                - self.settings.max_new_tokens)
        self.max_prompt_tokens = min(self.settings.max_prompt_tokens, left)

    def infer_group(self, items, prompt, confidence):
        images = [item.image for item in items]
        batch = self.to_device(self.processor(text=[prompt] * len(images), images=images,
                                              return_tensors="pt"))
        generated = self.generate(
            self.model, confidence=confidence, pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            image_embeds_position_mask=batch["image_embeds_position_mask"])
        # Special tokens carry the grounding (<phrase>, <patch_index_...>): keep them for
        # post_process_generation, which strips every tag itself.
        texts = self.processor.batch_decode(generated.sequences, skip_special_tokens=False)
        return generated.answers([self.answer(raw) for raw in texts])

    def answer(self, raw: str) -> dict:
        """CAPTION and ENTITIES of a decoded sequence, its special tokens kept."""
        caption, entities = self.processor.post_process_generation(raw)
        return {"CAPTION": caption, "ENTITIES": entities_json(entities)}

    def stepped(self):
        from .stepped_kosmos2 import SteppedKosmos2  # it builds on this module

        return SteppedKosmos2(self)
