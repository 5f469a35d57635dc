"""T5 tags one decoding step at a time (``inflight.SteppedGenerator`` for ``T5Tagger``):
T5's half of ``stepped.SteppedEncoderDecoder``. T5's relative position bias sees the
distances between a row's query and its keys, which the left-padded self-attention caches
keep as the sequence alone has them; the texts' padding is masked."""

from __future__ import annotations

from typing import Any

from ..text import clean_tags
from .stepped import SteppedEncoderDecoder, StepInputs, cache_argument
from .t5_tags import T5Tagger


class SteppedT5(SteppedEncoderDecoder):
    """Over a loaded ``T5Tagger``: its model, tokenizer and settings (max_new_tokens,
    num_beams, max_input_tokens). T5Tagger has no CONFIDENCE output."""

    def __init__(self, tagger: T5Tagger):
        super().__init__(tagger)
        self.tagger = tagger
        self.layers = self.model.config.num_decoder_layers

    def encoder_pass(self, text: str):
        tagger = self.tagger
        with tagger._tokenizer_lock:
            batch = tagger.processor([text], max_length=tagger.settings.max_input_tokens,
                                     truncation=True, return_tensors="pt")
        hidden = self.model.get_encoder()(**tagger.to_device(batch), return_dict=True)
        hidden = hidden.last_hidden_state
        cross = []
        for block in self.model.decoder.block:
            attention = block.layer[1].EncDecAttention
            shape = (1, hidden.shape[1], -1, attention.key_value_proj_dim)
            cross.append((attention.k(hidden).view(shape).transpose(1, 2),
                          attention.v(hidden).view(shape).transpose(1, 2)))
        return tagger.group_key(text), cross, hidden.shape[1]

    def forward(self, inputs: StepInputs):
        import torch

        model = self.model
        # The cross keys/values are cached, so the encoder output only lends its shape.
        hidden = torch.zeros((1, 1, model.config.d_model), dtype=model.dtype,
                             device=model.device)
        return model(encoder_outputs=(hidden.expand(inputs.rows, inputs.length, -1),),
                     attention_mask=inputs.text_mask, decoder_input_ids=inputs.tokens,
                     decoder_attention_mask=inputs.decoder_mask, use_cache=True,
                     cache_position=torch.tensor([inputs.steps], device=model.device),
                     return_dict=True, **{cache_argument(model): inputs.cache})

    def answer(self, tokens: list[int], _state) -> dict[str, Any]:
        raw = self.tagger.processor.batch_decode([tokens], skip_special_tokens=True)[0]
        return {"TAGS": clean_tags(raw)}
