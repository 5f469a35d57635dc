"""Triton adapter for t5_tags: the model logic lives in i2tt_server.runners."""

from i2tt_server.runners import T5Tagger
from i2tt_server.triton_adapter import triton_model

TritonPythonModel = triton_model(T5Tagger)
