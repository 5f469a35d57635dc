"""TrOCR reads lines one decoding step at a time (``inflight.SteppedGenerator`` for
``TrOCRReader``): TrOCR's half of ``stepped.SteppedEncoderDecoder``.

TrOCR's decoder adds a learned position embedding that it takes from the cache's length,
one position for the whole batch; rows that share a step are at different positions, so
the decoder's position module is wrapped (``RowPositions``) to take each row's own while a
step runs, and to do exactly what it did otherwise. Every line image is resized to the
same size, so the encoder outputs are equally long and need no mask, as in generate."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from .stepped import SteppedEncoderDecoder, StepInputs, cache_argument
from .trocr import TrOCRReader


class RowPositions(torch.nn.Module):
    """TrOCR's learned position embedding, with each row's own position where one is set
    (``rows``), the wrapped module's own result otherwise."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.positions = None  # [rows, 1] while a step runs

    def forward(self, input_ids, *args, **kwargs):
        if self.positions is None:  # (the cache's length: cache_length in transformers
            return self.inner(input_ids, *args, **kwargs)  # 5.24, past_key_values_length in 5.20)
        # the lookup TrOCRLearnedPositionalEmbedding makes, with per-row positions
        return torch.nn.functional.embedding(self.positions + self.inner.offset,
                                             self.inner.weight)

    @contextlib.contextmanager
    def rows(self, positions):
        self.positions = positions
        try:
            yield
        finally:
            self.positions = None


def row_positions(decoder) -> RowPositions:
    """The TrOCR decoder's position module, wrapped once (a model shared by runners keeps
    one wrapper)."""
    from transformers.models.trocr.modeling_trocr import TrOCRLearnedPositionalEmbedding

    if isinstance(decoder.embed_positions, RowPositions):
        return decoder.embed_positions
    if not isinstance(decoder.embed_positions, TrOCRLearnedPositionalEmbedding):
        raise NotImplementedError(f"stepped TrOCR takes learned position embeddings, not "
                                  f"{type(decoder.embed_positions).__name__}")
    decoder.embed_positions = RowPositions(decoder.embed_positions)
    return decoder.embed_positions


class SteppedTrOCR(SteppedEncoderDecoder):
    """Over a loaded ``TrOCRReader``: its VisionEncoderDecoderModel, processor and
    settings (max_new_tokens, num_beams); CONFIDENCE for greedy search."""

    def __init__(self, reader: TrOCRReader):
        super().__init__(reader, confidence_output=True)
        self.reader = reader
        self.decoder = self.model.decoder  # TrOCRForCausalLM
        inner = self.decoder.model.decoder  # TrOCRDecoder
        self.positions = row_positions(inner)
        self.attentions = [layer.encoder_attn for layer in inner.layers]
        self.layers = len(self.attentions)

    def encoder_pass(self, image):
        model = self.model
        batch = self.reader.to_device(self.reader.processor(images=[image],
                                                            return_tensors="pt"))
        hidden = model.encoder(pixel_values=batch["pixel_values"],
                               return_dict=True).last_hidden_state
        if hasattr(model, "enc_to_dec_proj"):  # as VisionEncoderDecoderModel.forward
            hidden = model.enc_to_dec_proj(hidden)
        cross = []
        for attention in self.attentions:  # as TrOCRAttention makes them, for one image
            shape = (1, -1, attention.num_heads, attention.head_dim)
            cross.append((attention.k_proj(hidden).view(shape).transpose(1, 2),
                          attention.v_proj(hidden).view(shape).transpose(1, 2)))
        return self.reader.group_key(image), cross, hidden.shape[1]

    def forward(self, inputs: StepInputs):
        # The cross keys/values are cached: the encoder states only say they exist.
        hidden = torch.zeros((inputs.rows, 1, self.attentions[0].kdim),
                             dtype=self.model.dtype, device=self.model.device)
        with self.positions.rows(inputs.positions):
            return self.decoder(input_ids=inputs.tokens, attention_mask=inputs.decoder_mask,
                                encoder_hidden_states=hidden,
                                encoder_attention_mask=inputs.text_mask if inputs.padded_text
                                else None,
                                use_cache=True, return_dict=True,
                                **{cache_argument(self.decoder): inputs.cache})

    def answer(self, tokens: list[int], _state) -> dict[str, Any]:
        text = self.reader.processor.batch_decode([tokens], skip_special_tokens=True)[0]
        return {"TEXT": text.strip()}
