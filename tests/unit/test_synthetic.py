"""The synthetic weights builder's lengths: varied-length answers only where calibrated,
refused before anything is built elsewhere (full-size building is too slow for here; the
calibration is measured in i2tt_server/weights/synthetic.py's comment)."""

from __future__ import annotations

import pytest

from i2tt_server.runners import RUNNERS
from i2tt_server.weights.synthetic import (FAMILIES, VARIED_END_BIAS, VARIED_END_GROWTH,
                                           make_test_weights)


def quiet(_message):
    pass


def test_varied_lengths_are_refused_for_an_uncalibrated_family(tmp_path):
    assert "kosmos" not in VARIED_END_BIAS
    with pytest.raises(ValueError, match="not full kosmos"):
        make_test_weights(tmp_path, "full", ["kosmos-2"], log=quiet, lengths="varied")
    assert not any(tmp_path.iterdir())


def test_varied_lengths_are_refused_for_tiny_weights(tmp_path):
    with pytest.raises(ValueError, match="not tiny trocr"):
        make_test_weights(tmp_path, "tiny", ["trocr-printed"], log=quiet, lengths="varied")
    assert not any(tmp_path.iterdir())


def test_unknown_lengths_are_refused(tmp_path):
    with pytest.raises(ValueError, match="lengths must be one of"):
        make_test_weights(tmp_path, "full", ["trocr-printed"], log=quiet, lengths="long")


def test_every_calibrated_family_has_a_bias_for_each_of_its_folders():
    assert {"t5", "trocr"} <= set(VARIED_END_BIAS)
    assert set(VARIED_END_GROWTH) <= set(VARIED_END_BIAS)
    for runner, family in FAMILIES.items():
        bias = VARIED_END_BIAS.get(family)
        if isinstance(bias, tuple):  # one per folder, in the runner's checkpoints order
            assert len(bias) == len(RUNNERS[runner].checkpoints), family
    for start, factor in VARIED_END_GROWTH.values():
        assert start >= 0 and factor > 1
