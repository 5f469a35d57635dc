"""Grouping the requests of one dynamic batch by what changes their computation."""

from __future__ import annotations

from typing import Hashable, Iterable


def group_indices(keys: Iterable[Hashable]) -> dict[Hashable, list[int]]:
    """Indices of equal keys, groups in first-seen order, indices ascending.

    BLIP and Kosmos-2 give different answers when prompts of different lengths share one
    padded batch, so each distinct prompt becomes its own generate call.
    """
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return groups
