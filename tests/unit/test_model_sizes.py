"""scripts/model_sizes.py counts what a loaded model holds (deploy/README.md's sizing)."""

from __future__ import annotations

import sys

from testdata import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from model_sizes import count_elements, row  # noqa: E402


def test_counted_elements_equal_the_loaded_models_parameters(weights_dir):
    from transformers import T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(weights_dir / "t5-tags")
    unique = {id(p): p.numel() for p in model.parameters()}  # tied weights once
    assert count_elements(weights_dir / "t5-tags") == sum(unique.values())
    sized = row("t5-tags", weights_dir / "t5-tags")
    assert sized["gpu_dtype"] == "bfloat16" and sized["gpu_bytes"] * 2 == sized["cpu_bytes"]
