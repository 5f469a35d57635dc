"""What the load test sends and how it checks the answers; no locust, no gevent, so the
unit tests can import it.

Models, their inputs and their outputs come from the model repository's configs, so a model
added to model_repository/ is load-tested the day it exists: IMAGE inputs get photographs
(or printed text lines, for models that read one line, or pages of lines for page models), TEXT inputs caption-like text, an
optional PROMPT a prefix now and then; answers are checked by output name (a non-empty
CAPTION, JSON ENTITIES, a TAGS row ...) and by shape for the rest.

Images are the seed images plus variants made at start-up (resized, flipped, re-encoded),
so that Triton's response cache cannot answer the whole run from memory. Only the client
side is needed (tritonclient, numpy, pillow), never torch.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from PIL import Image, ImageDraw, ImageFont, ImageOps
from tritonclient.grpc import model_config_pb2

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SEED_NAMES = ("example1.jpg", "example2.png", "human1.png")
# Models whose IMAGE is one printed line of text (the runners' ``sample = "line"``; a unit
# test keeps the two in step). Every other image model gets photographs.
LINE_MODELS = frozenset({"trocr_ocr"})
# Models whose IMAGE is a whole page of text (``sample = "page"``).
PAGE_MODELS = frozenset({"ocr_page"})
# Share of each call in "mix", our guess at real traffic: most callers want caption + tags in
# one round trip, some only a caption, a few tag their own text; grounding and OCR are
# rarer. A model not listed here gets weight 1.
MIX_WEIGHTS = {"caption_tags": 6, "blip_caption": 3, "t5_tags": 2}

BLIP_PROMPTS = ("a photography of", "a picture of")
CAPTION_WORDS = ("man woman dog cat bird car street table wooden blocks robot head "
                 "circuit building city field tree sky water book sign road house").split()
CAPTION_TEMPLATES = (
    "a {0} sitting on a {1}",
    "a photography of a {0} next to a {1}",
    "two {0}s and a {1} in the background",
    "a close up view of a {0} with a {1}",
    "a {0} standing in front of a {1} at night",
)


@dataclass(frozen=True)
class ModelSpec:
    """A served model as its config describes it."""

    name: str
    inputs: tuple[str, ...]
    optional: tuple[str, ...]
    outputs: tuple[str, ...]


def read_specs(repository: Path = ROOT / "model_repository") -> dict[str, ModelSpec]:
    specs = {}
    for path in sorted(Path(repository).glob("*/config.pbtxt")):
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        specs[config.name] = ModelSpec(
            config.name, tuple(i.name for i in config.input if not i.optional),
            tuple(i.name for i in config.input if i.optional),
            tuple(o.name for o in config.output))
    return specs


SPECS = read_specs()
# A server may serve part of the repository (e.g. without ocr_page where Tesseract's data is
# missing): I2TT_LOAD_MODELS, comma-separated, limits the load test to those models.
if os.environ.get("I2TT_LOAD_MODELS"):
    SPECS = {name: spec for name, spec in SPECS.items()
             if name in os.environ["I2TT_LOAD_MODELS"].split(",")}
MODELS = tuple(SPECS)


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    options = {"JPEG": {"quality": 85}, "WEBP": {"quality": 80}}.get(fmt, {})
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def make_images() -> list[bytes]:
    """The seed images as they are, plus resized / flipped / re-encoded variants: distinct
    bytes (so distinct cache keys) at the sizes and formats callers really send."""
    folder = Path(os.environ.get("I2TT_SEED_IMAGES") or DATA)
    originals = [(folder / n).read_bytes() for n in SEED_NAMES]
    seeds = [Image.open(io.BytesIO(data)).convert("RGB") for data in originals]
    images = list(originals)
    formats = itertools.cycle(("JPEG", "WEBP", "PNG"))
    for seed in seeds:
        for width in (224, 320, 384, 480, 640):
            height = max(1, round(seed.height * width / seed.width))
            resized = seed.resize((width, height), Image.Resampling.BILINEAR)
            for variant in (resized, ImageOps.mirror(resized), ImageOps.grayscale(resized)):
                images.append(encode(variant, next(formats)))
    return images


def make_text_lines(count: int = 40) -> list[bytes]:
    """Single lines of printed text, what TrOCR is made to read."""
    rng = random.Random(1)
    font = ImageFont.load_default(size=28)
    lines = []
    for _ in range(count):
        text = " ".join(rng.choice(CAPTION_WORDS) for _ in range(rng.randint(2, 5)))
        width = int(font.getlength(text)) + 24
        image = Image.new("RGB", (width, 48), "white")
        ImageDraw.Draw(image).text((12, 8), text, fill="black", font=font)
        lines.append(encode(image, "PNG"))
    return lines


def make_pages(count: int = 6) -> list[bytes]:
    """Pages of a few printed lines (one or two columns), what ocr_page is made to read."""
    rng = random.Random(3)
    font = ImageFont.load_default(size=22)
    pages = []
    for number in range(count):
        columns = 1 + number % 2
        image = Image.new("RGB", (420 * columns + 40, 60 + 40 * (4 + number)), "white")
        draw = ImageDraw.Draw(image)
        for column in range(columns):
            for row in range(4 + number):
                text = " ".join(rng.choice(CAPTION_WORDS) for _ in range(rng.randint(2, 4)))
                draw.text((20 + 420 * column, 30 + 40 * row), text, fill="black", font=font)
        pages.append(encode(image, "PNG"))
    return pages


def make_captions(count: int = 60) -> list[bytes]:
    rng = random.Random(2)
    return [rng.choice(CAPTION_TEMPLATES).format(*rng.sample(CAPTION_WORDS, 2)).encode()
            for _ in range(count)]


class BadResponse(Exception):
    """The server answered, but not what the wire contract promises."""


def text_input(name: str, value: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.object_))
    return tensor


def output(result, name: str) -> np.ndarray:
    array = result.as_numpy(name)
    if array is None:
        raise BadResponse(f"missing output {name}")
    if array.ndim != 2 or array.shape[0] != 1 or array.shape[1] < 1:
        raise BadResponse(f"{name} has shape {array.shape}, expected [1, k]")
    return array


def nonempty_text(result, name: str) -> str:
    text = output(result, name)[0, 0].decode("utf-8", errors="replace")
    if not text.strip():
        raise BadResponse(f"empty {name}")
    return text


class Payloads:
    """Every payload, built once per process before any user starts (not measured)."""

    def __init__(self):
        self.images = make_images()
        self.text_lines = make_text_lines()
        self.pages = make_pages()
        self.captions = make_captions()

    def request(self, model: str, rng: random.Random) -> list[grpcclient.InferInput]:
        """One request for ``model``, built from its config's inputs."""
        spec = SPECS[model]
        inputs = []
        for name in spec.inputs:
            if name == "IMAGE":
                pool = self.text_lines if model in LINE_MODELS else \
                    self.pages if model in PAGE_MODELS else self.images
                inputs.append(text_input(name, rng.choice(pool)))
            else:
                inputs.append(text_input(name, rng.choice(self.captions)))
        if "PROMPT" in spec.optional and rng.random() < 0.25:  # some callers steer captions
            inputs.append(text_input("PROMPT", rng.choice(BLIP_PROMPTS).encode()))
        return inputs


def check(model: str, result) -> None:
    """Raise BadResponse unless every output of the model is there and well-formed."""
    for name in SPECS[model].outputs:
        CHECKS.get(name, output)(result, name)


def check_json_list(result, name: str) -> None:
    raw = output(result, name)[0, 0]
    try:
        value = json.loads(raw)
    except ValueError:
        raise BadResponse(f"{name} is not JSON: {raw[:80]!r}") from None
    if not isinstance(value, list):
        raise BadResponse(f"{name} is not a JSON list")


def check_tags(result, name: str) -> None:
    # Random test weights may generate no tag at all, so only the row itself is required.
    tags = output(result, name)
    if not all(isinstance(t, bytes) for t in tags[0]):
        raise BadResponse(f"{name} holds non-bytes values")


def check_confidence(result, name: str) -> None:
    value = float(output(result, name)[0, 0])
    if not 0 < value <= 1:
        raise BadResponse(f"{name} is {value}, not a probability")


# Output name -> its check; outputs not listed need only the right shape (a random TrOCR
# may read nothing sensible, but it must answer one TEXT per request).
CHECKS = {"CAPTION": nonempty_text, "ENTITIES": check_json_list, "LINES": check_json_list,
          "TAGS": check_tags, "CONFIDENCE": check_confidence}
