"""Kosmos-2 grounds captions one decoding step at a time (``inflight.SteppedGenerator`` for
``Kosmos2Grounder``): Kosmos-2's half of ``stepped.SteppedEncoderDecoder``.

Kosmos-2 generates with its text model alone: the image's features take the place of the
image tokens of the prompt, so there is no cross-attention, only the prompt's cache. A new
sequence begins as generate begins for one image: the vision model and its projection,
then one forward over the whole prompt, and its first token chosen, all on that image
alone. Every later step shares one forward with the other sequences, each row at its own
position: Kosmos-2's sinusoidal positions start after its padding index and give a pad
token the padding index, which the rows' position ids repeat."""

from __future__ import annotations

from typing import Any

from .kosmos2 import Kosmos2Grounder
from .stepped import SteppedEncoderDecoder, StepInputs, StepSequence, cache_argument


def image_features(model, pixel_values):
    """The image's features in the text model's space, as Kosmos-2's generate makes them:
    its ``get_image_features`` (transformers 5.24), or the same steps inline (5.20)."""
    import torch

    if hasattr(model, "get_image_features"):
        return model.get_image_features(pixel_values, return_dict=True).pooler_output
    hidden = model.vision_model.model.post_layernorm(model.vision_model(pixel_values)[0])
    return model.image_to_text_projection(torch.nn.functional.normalize(hidden, dim=-1))[0]


class SteppedKosmos2(SteppedEncoderDecoder):
    """Over a loaded ``Kosmos2Grounder``: its Kosmos2ForConditionalGeneration, processor
    and settings (max_new_tokens); greedy search, CONFIDENCE when asked."""

    def __init__(self, grounder: Kosmos2Grounder):
        super().__init__(grounder, confidence_output=True,
                         generation_model=grounder.model.text_model)
        self.grounder = grounder
        self.decoder = grounder.model.text_model  # Kosmos2TextForCausalLM
        self.layers = len(self.decoder.model.layers)
        self.padding = self.decoder.model.embed_positions.padding_idx

    def begin(self, item, confidence: bool) -> StepSequence:
        grounder = self.grounder
        with grounder._tokenizer_lock:
            batch = grounder.processor(text=[item.prompt], images=[item.image],
                                       return_tensors="pt")
        batch = grounder.to_device(batch)
        image = image_features(grounder.model, batch["pixel_values"])
        tokens = batch["input_ids"][0].tolist()
        # One group: each row has its own positions and mask, so prompts of any length
        # share steps (a padded static batch could not; why Kosmos2Grounder groups by them)
        state = self.start(None, [], 0, confidence, prompt=tokens)
        # the prompt's forward, as generate's first step on this image alone
        output = self.decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              image_embeds=image,
                              image_embeds_position_mask=batch["image_embeds_position_mask"],
                              use_cache=True, return_dict=True, **self.last_logits)
        (_token,), state.cache = self.choose([state], output)
        return state

    def forward(self, inputs: StepInputs):
        import torch

        # as Kosmos-2's positions from its input ids: after the padding index, a pad token at it
        positions = torch.where(inputs.tokens != self.padding,
                                inputs.positions + self.padding + 1,
                                torch.full_like(inputs.positions, self.padding))
        return self.decoder(input_ids=inputs.tokens, attention_mask=inputs.full_mask,
                            position_ids=positions, use_cache=True, return_dict=True,
                            **{cache_argument(self.decoder): inputs.cache.self_attention_cache})

    def answer(self, tokens: list[int], _state) -> dict[str, Any]:
        raw = self.grounder.processor.batch_decode([tokens], skip_special_tokens=False)[0]
        return self.grounder.answer(raw)
