"""The reference: plain transformers code, one image or text at a time, written the way
the models' own documentation calls them. Served answers must equal these exactly, at the
same dtype and device (``dtype``: a torch dtype name, as a runner's ``dtype`` setting);
their confidences within a float tolerance (tests/unit/test_runners.py says which)."""

from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image


def rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


@lru_cache(maxsize=None)
def _load(kind: str, path: str, dtype: str = "float32", device: str = "cpu"):
    import transformers as t

    classes = {
        "blip": (t.BlipProcessor, t.BlipForConditionalGeneration),
        "kosmos": (t.Kosmos2Processor, t.Kosmos2ForConditionalGeneration),
        "trocr": (t.TrOCRProcessor, t.VisionEncoderDecoderModel),
        "t5": (t.AutoTokenizer, t.T5ForConditionalGeneration),
    }[kind]
    model = classes[1].from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
    return classes[0].from_pretrained(path), model


def _to(inputs, model):
    """The processor's tensors on the model's device, floating ones in its dtype."""
    return {k: v.to(model.device, model.dtype) if v.is_floating_point() else v.to(model.device)
            for k, v in inputs.items()}


def confidence_tolerance(dtype: str) -> float:
    """How far (relative) a served confidence may be from this reference's, or a batch's
    from the item's alone: the text is the same, and the scores are float32 (generate
    upcasts the logits), but they come from activations in ``dtype``, which a padded,
    batched matmul rounds in another order. float32: a few ulps (measured at most 1e-6 on
    the tiny weights). 16-bit activations keep 8 (bfloat16) or 11 (float16) bits: measured
    at most 1.3e-5 in bfloat16, allowed 1e-3, a quarter of one bfloat16 rounding step
    (2**-8) on the mean log-probability."""
    return 1e-5 if dtype == "float32" else 1e-3


def shared_step_tolerance(dtype: str) -> float:
    """How far (relative) an in-flight answer's confidence may be from the input's alone
    when other rows shared its steps: its tokens are the same, but a row's activations
    round by what shares its products (float32 matrix products by their row count;
    bfloat16 ones at times by one bfloat16 step, which the tiny test models carry on into
    a short answer's mean). Measured over 1,000 distinct inputs per model
    (scripts/parity_inflight.py): at most 2.4e-5 in float32 and 4.4e-3 in bfloat16;
    allowed 1e-4 and 1e-2. The static path's batches round by the same products."""
    return 1e-4 if dtype == "float32" else 1e-2


# What every captioning and reading call below asks of generate: the scores of each step.
SCORED = {"output_scores": True, "return_dict_in_generate": True, "do_sample": False}


def _confidence(model, out) -> float:
    """The confidence of the one sequence generated: exp of the mean log-probability of
    the tokens it chose, the end token included (alone, nothing is padded). Greedy: the
    softmax of each step's scores at the chosen token. Beams: transformers' own
    ``sequences_scores``, the chosen beam's summed log-probabilities divided by
    length ** length_penalty, turned back into a mean."""
    if getattr(out, "sequences_scores", None) is not None:
        length = int((out.beam_indices[0] >= 0).sum())
        penalty = model.generation_config.length_penalty
        penalty = 1.0 if penalty is None else penalty  # unset: generate's default
        total = float(out.sequences_scores[0]) * length ** penalty
        return math.exp(total / length)
    chosen = out.sequences[0, -len(out.scores):]
    logps = [float(torch.softmax(step[0].double(), dim=-1)[token].log())
             for step, token in zip(out.scores, chosen.tolist())]
    return math.exp(sum(logps) / len(logps))


@torch.inference_mode()
def blip_caption(path: Path, image: bytes, prompt: str | None = None, max_new_tokens: int = 30,
                 dtype: str = "float32", device: str = "cpu",
                 num_beams: int = 1) -> tuple[str, float]:
    """(caption, confidence)"""
    processor, model = _load("blip", str(path), dtype, device)
    if prompt:
        inputs = processor(rgb(image), prompt, return_tensors="pt")
    else:
        inputs = processor(rgb(image), return_tensors="pt")
    out = model.generate(**_to(inputs, model), max_new_tokens=max_new_tokens,
                         num_beams=num_beams, **SCORED)
    return (processor.decode(out.sequences[0], skip_special_tokens=True).strip(),
            _confidence(model, out))


@torch.inference_mode()
def kosmos2_caption(path: Path, image: bytes, prompt: str = "<grounding>An image of",
                    max_new_tokens: int = 64, dtype: str = "float32", device: str = "cpu",
                    num_beams: int = 1):
    """(caption, entities, confidence)"""
    processor, model = _load("kosmos", str(path), dtype, device)
    inputs = _to(processor(text=prompt, images=rgb(image), return_tensors="pt"), model)
    out = model.generate(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                         attention_mask=inputs["attention_mask"], image_embeds=None,
                         image_embeds_position_mask=inputs["image_embeds_position_mask"],
                         use_cache=True, max_new_tokens=max_new_tokens, num_beams=num_beams,
                         **SCORED)
    text = processor.batch_decode(out.sequences, skip_special_tokens=False)[0]
    return (*processor.post_process_generation(text), _confidence(model, out))


@torch.inference_mode()
def trocr_text(path: Path, image: bytes, max_new_tokens: int = 64, dtype: str = "float32",
               device: str = "cpu", num_beams: int = 1) -> tuple[str, float]:
    """(text, confidence)"""
    processor, model = _load("trocr", str(path), dtype, device)
    pixel_values = _to(processor(images=rgb(image), return_tensors="pt"), model)["pixel_values"]
    out = model.generate(pixel_values, max_new_tokens=max_new_tokens, num_beams=num_beams,
                         **SCORED)
    return (processor.batch_decode(out.sequences, skip_special_tokens=True)[0].strip(),
            _confidence(model, out))


@torch.inference_mode()
def t5_raw_tags(path: Path, text: str, num_beams: int = 8, max_new_tokens: int = 64,
                dtype: str = "float32", device: str = "cpu") -> str:
    tokenizer, model = _load("t5", str(path), dtype, device)
    inputs = tokenizer([text], max_length=512, truncation=True, return_tensors="pt")
    out = model.generate(**_to(inputs, model), num_beams=num_beams, do_sample=False,
                         max_new_tokens=max_new_tokens)
    return tokenizer.batch_decode(out, skip_special_tokens=True)[0]
