"""Distinct request payloads, made deterministically from the seed images.

Every request carries different bytes, so neither Triton's response cache nor any other
memo can answer from memory: each row measures real decoding and generation.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFont

SEED_NAMES = ("example1.jpg", "example2.png", "human1.png")
MAX_SIDE = 640  # what a client would send: tens of KB, not the 1.4 MB original PNG

WORDS = tuple(("man woman dog cat bird car street table wooden block blocks trivia head robot "
               "circuit interface background shirt tree sky building city field grass snow "
               "book paper letter sign road house window water light").split())
ADJECTIVES = tuple("white black red blue green small large old young digital bright dark".split())
RELATIONS = tuple("on in with near behind under beside above".split())


def seed_images_dir(repo_root: Path) -> Path:
    """The photographs the project carries for tests, load tests and benchmarks."""
    return repo_root / "tests" / "data"


class Payloads:
    """``photo(i)``, ``text(i)``, ``line(i)`` and ``page(i)``: the i-th distinct input of
    each kind."""

    def __init__(self, seed_dir: Path):
        self.seeds = []
        for name in SEED_NAMES:
            image = Image.open(seed_dir / name).convert("RGB")
            image.thumbnail((MAX_SIDE, MAX_SIDE))
            self.seeds.append(image)
        self._cache: dict[tuple[str, int], bytes | str] = {}

    def photo(self, i: int) -> bytes:
        """A JPEG of a random crop (80-100% per side) of a seed, brightness jittered."""
        key = ("photo", i)
        if key not in self._cache:
            rng = random.Random(i)
            seed = self.seeds[i % len(self.seeds)]
            w, h = seed.size
            cw, ch = int(w * rng.uniform(0.8, 1.0)), int(h * rng.uniform(0.8, 1.0))
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            variant = ImageEnhance.Brightness(seed.crop((x, y, x + cw, y + ch))).enhance(
                rng.uniform(0.85, 1.15))
            buffer = io.BytesIO()
            variant.save(buffer, "JPEG", quality=90)
            self._cache[key] = buffer.getvalue()
        return self._cache[key]  # type: ignore[return-value]

    def text(self, i: int) -> str:
        """A caption-like sentence of about a dozen words (what t5_tags gets from BLIP)."""
        rng = random.Random(1_000_003 * (i + 1))
        return (f"a photography of a {rng.choice(ADJECTIVES)} {rng.choice(WORDS)} "
                f"{rng.choice(RELATIONS)} a {rng.choice(ADJECTIVES)} {rng.choice(WORDS)} "
                f"with a {rng.choice(WORDS)} in the background {i}")

    def line(self, i: int) -> bytes:
        """A PNG of one printed text line, the input TrOCR expects."""
        key = ("line", i)
        if key not in self._cache:
            text = self.text(i)[len("a photography of "):]
            image = Image.new("RGB", (640, 48), "white")
            ImageDraw.Draw(image).text((8, 16), text, fill="black", font=ImageFont.load_default())
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            self._cache[key] = buffer.getvalue()
        return self._cache[key]  # type: ignore[return-value]

    def page(self, i: int, lines: int = 6) -> bytes:
        """A PNG page of ``lines`` printed lines (one column), what ocr_page reads."""
        key = ("page", i, lines)
        if key not in self._cache:
            rng = random.Random(7_000_001 * (i + 1) + lines)
            font = ImageFont.load_default(size=22)
            image = Image.new("RGB", (900, 80 + 40 * lines), "white")
            draw = ImageDraw.Draw(image)
            for row in range(lines):
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
                draw.text((30, 40 + 40 * row), text, fill="black", font=font)
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            self._cache[key] = buffer.getvalue()
        return self._cache[key]  # type: ignore[return-value]

    def get(self, kind: str, i: int):
        return getattr(self, kind)(i)
