"""Text clean-up: BLIP-large's nonsense words and T5 tag lists."""

from __future__ import annotations

import re

# BLIP-large invents words like "arafed", "araffe", "arafe", "arrafed" (a training-data
# artefact). They match this family and never a real English word.
NONSENSE_WORD = re.compile(r"\b(?:a+r+a+f+e*d?s?|ara+f+[a-z]*)\b", re.IGNORECASE)
_SPACES = re.compile(r"\s{2,}")
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)


def clean_caption(caption: str) -> str:
    """Drop nonsense words and the double space they leave behind."""
    return _SPACES.sub(" ", NONSENSE_WORD.sub("", caption)).strip()


def clean_tags(raw: str) -> list[str]:
    """T5 emits "Photography, Creativity, a Photography, ..."; return clean unique tags.

    Trimmed, empty ones dropped, leading articles removed, de-duplicated case-insensitively
    in first-seen order.
    """
    tags: list[str] = []
    seen: set[str] = set()
    for part in raw.split(","):
        tag = _ARTICLE.sub("", part.strip()).strip()
        key = tag.casefold()
        if tag and key not in seen:
            seen.add(key)
            tags.append(tag)
    return tags
