"""The reference: plain transformers code, one image or text at a time, written the way
the models' own documentation calls them. Served answers must equal these exactly."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image


def rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


@lru_cache(maxsize=None)
def _load(kind: str, path: str):
    import transformers as t

    classes = {
        "blip": (t.BlipProcessor, t.BlipForConditionalGeneration),
        "kosmos": (t.Kosmos2Processor, t.Kosmos2ForConditionalGeneration),
        "trocr": (t.TrOCRProcessor, t.VisionEncoderDecoderModel),
        "t5": (t.AutoTokenizer, t.T5ForConditionalGeneration),
    }[kind]
    return classes[0].from_pretrained(path), classes[1].from_pretrained(path).eval()


@torch.inference_mode()
def blip_caption(path: Path, image: bytes, prompt: str | None = None, max_new_tokens: int = 30) -> str:
    processor, model = _load("blip", str(path))
    if prompt:
        inputs = processor(rgb(image), prompt, return_tensors="pt")
    else:
        inputs = processor(rgb(image), return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=max_new_tokens)
    return processor.decode(out[0], skip_special_tokens=True).strip()


@torch.inference_mode()
def kosmos2_caption(path: Path, image: bytes, prompt: str = "<grounding>An image of",
                    max_new_tokens: int = 64):
    processor, model = _load("kosmos", str(path))
    inputs = processor(text=prompt, images=rgb(image), return_tensors="pt")
    out = model.generate(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                         attention_mask=inputs["attention_mask"], image_embeds=None,
                         image_embeds_position_mask=inputs["image_embeds_position_mask"],
                         use_cache=True, max_new_tokens=max_new_tokens)
    text = processor.batch_decode(out, skip_special_tokens=False)[0]
    return processor.post_process_generation(text)


@torch.inference_mode()
def trocr_text(path: Path, image: bytes, max_new_tokens: int = 64) -> str:
    processor, model = _load("trocr", str(path))
    pixel_values = processor(images=rgb(image), return_tensors="pt").pixel_values
    out = model.generate(pixel_values, max_new_tokens=max_new_tokens)
    return processor.batch_decode(out, skip_special_tokens=True)[0].strip()


@torch.inference_mode()
def t5_raw_tags(path: Path, text: str, num_beams: int = 8, max_new_tokens: int = 64) -> str:
    tokenizer, model = _load("t5", str(path))
    inputs = tokenizer([text], max_length=512, truncation=True, return_tensors="pt")
    out = model.generate(**inputs, num_beams=num_beams, do_sample=False,
                         max_new_tokens=max_new_tokens)
    return tokenizer.batch_decode(out, skip_special_tokens=True)[0]
