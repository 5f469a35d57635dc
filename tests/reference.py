"""The reference: plain transformers code, one image or text at a time, written the way
the models' own documentation calls them. Served answers must equal these exactly, at the
same dtype and device (``dtype``: a torch dtype name, as a runner's ``dtype`` setting)."""

from __future__ import annotations

import io
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


@torch.inference_mode()
def blip_caption(path: Path, image: bytes, prompt: str | None = None, max_new_tokens: int = 30,
                 dtype: str = "float32", device: str = "cpu") -> str:
    processor, model = _load("blip", str(path), dtype, device)
    if prompt:
        inputs = processor(rgb(image), prompt, return_tensors="pt")
    else:
        inputs = processor(rgb(image), return_tensors="pt")
    out = model.generate(**_to(inputs, model), max_new_tokens=max_new_tokens)
    return processor.decode(out[0], skip_special_tokens=True).strip()


@torch.inference_mode()
def kosmos2_caption(path: Path, image: bytes, prompt: str = "<grounding>An image of",
                    max_new_tokens: int = 64, dtype: str = "float32", device: str = "cpu"):
    processor, model = _load("kosmos", str(path), dtype, device)
    inputs = _to(processor(text=prompt, images=rgb(image), return_tensors="pt"), model)
    out = model.generate(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                         attention_mask=inputs["attention_mask"], image_embeds=None,
                         image_embeds_position_mask=inputs["image_embeds_position_mask"],
                         use_cache=True, max_new_tokens=max_new_tokens)
    text = processor.batch_decode(out, skip_special_tokens=False)[0]
    return processor.post_process_generation(text)


@torch.inference_mode()
def trocr_text(path: Path, image: bytes, max_new_tokens: int = 64, dtype: str = "float32",
               device: str = "cpu") -> str:
    processor, model = _load("trocr", str(path), dtype, device)
    pixel_values = _to(processor(images=rgb(image), return_tensors="pt"), model)["pixel_values"]
    out = model.generate(pixel_values, max_new_tokens=max_new_tokens)
    return processor.batch_decode(out, skip_special_tokens=True)[0].strip()


@torch.inference_mode()
def t5_raw_tags(path: Path, text: str, num_beams: int = 8, max_new_tokens: int = 64,
                dtype: str = "float32", device: str = "cpu") -> str:
    tokenizer, model = _load("t5", str(path), dtype, device)
    inputs = tokenizer([text], max_length=512, truncation=True, return_tensors="pt")
    out = model.generate(**_to(inputs, model), num_beams=num_beams, do_sample=False,
                         max_new_tokens=max_new_tokens)
    return tokenizer.batch_decode(out, skip_special_tokens=True)[0]
