"""BLIP captions one decoding step at a time (``inflight.SteppedGenerator`` for
``BlipCaptioner``): BLIP's half of ``stepped.SteppedEncoderDecoder``.

BLIP's ``generate`` is its text decoder's own generate over the prompt (the start token,
then the prompt's words), cross-attending to the vision encoder's output. So a new
sequence begins as generate begins for one image: the vision encoder, then one forward over
the whole prompt (which makes the cross-attention keys and the prompt's cache) and its
first token chosen, all on that image alone. Every later step shares one forward with the
other sequences, each row at its own position (the text decoder takes position ids), the
caches left-padded and masked."""

from __future__ import annotations

from typing import Any

from .blip import BlipCaptioner
from .stepped import (SteppedEncoderDecoder, StepInputs, StepSequence, cache_argument,
                      output_cache)


class SteppedBlip(SteppedEncoderDecoder):
    """Over a loaded ``BlipCaptioner``: its BlipForConditionalGeneration, processor and
    settings (max_new_tokens, clean_caption); greedy search, CONFIDENCE when asked."""

    def __init__(self, captioner: BlipCaptioner):
        text = captioner.model.config.text_config
        # as BlipForConditionalGeneration.generate calls its text decoder's generate
        super().__init__(captioner, confidence_output=True,
                         generation_model=captioner.model.text_decoder,
                         eos_token_id=text.sep_token_id, pad_token_id=text.pad_token_id)
        self.captioner = captioner
        self.decoder = captioner.model.text_decoder  # BlipTextLMHeadModel
        self.layers = len(self.decoder.bert.encoder.layer)
        self.width = captioner.model.config.vision_config.hidden_size

    def prompt_tokens(self, prompt: str | None) -> list[int]:
        """The tokens generate starts from: BLIP's start token, then the prompt's words
        (its processor's tokens less the closing [SEP], the first made the start token)."""
        start = self.captioner.model.config.text_config.bos_token_id
        if not prompt:
            return [start]
        with self.captioner._tokenizer_lock:
            tokens = self.captioner.processor.tokenizer([prompt])["input_ids"][0]
        return [start] + list(tokens[1:-1])

    def begin(self, item, confidence: bool) -> StepSequence:
        import torch

        model, device = self.captioner.model, self.model.device
        pixels = self.captioner.to_device(self.captioner.processor(images=[item.image],
                                                                   return_tensors="pt"))
        hidden = model.vision_model(pixel_values=pixels["pixel_values"])[0]
        tokens = self.prompt_tokens(item.prompt)
        # One group: each row has its own positions and mask, so prompts of any length
        # share steps (a padded static batch could not; why BlipCaptioner groups by prompt)
        state = self.start(None, None, hidden.shape[1], confidence, prompt=tokens)
        length = len(tokens)
        # the prompt's forward, as generate's first step on this image alone
        output = self.decoder(
            input_ids=torch.tensor([tokens], device=device),
            attention_mask=torch.ones((1, length), dtype=torch.long, device=device),
            position_ids=torch.arange(length, device=device)[None],
            encoder_hidden_states=hidden,
            encoder_attention_mask=torch.ones(hidden.shape[:-1], dtype=torch.long, device=device),
            use_cache=True, return_dict=True, **self.last_logits)
        state.cross = [(layer.keys, layer.values)
                       for layer in output_cache(output).cross_attention_cache.layers]
        (_token,), state.cache = self.choose([state], output)
        return state

    def forward(self, inputs: StepInputs):
        import torch

        device = self.model.device
        # The cross keys/values are cached: the image states only lend their shape.
        hidden = torch.zeros((1, 1, self.width), dtype=self.model.dtype, device=device)
        return self.decoder(input_ids=inputs.tokens, attention_mask=inputs.full_mask,
                            position_ids=inputs.positions,
                            encoder_hidden_states=hidden.expand(inputs.rows, inputs.length, -1),
                            encoder_attention_mask=inputs.text_mask, use_cache=True,
                            return_dict=True, **{cache_argument(self.decoder): inputs.cache})

    def answer(self, tokens: list[int], _state) -> dict[str, Any]:
        decoded = self.captioner.processor.batch_decode([tokens], skip_special_tokens=True)[0]
        return {"CAPTION": self.captioner.caption(decoded)}
