"""Triton adapter for kosmos2_caption: the model logic lives in i2tt_server.runners."""

from i2tt_server.runners import Kosmos2Grounder
from i2tt_server.triton_adapter import triton_model

TritonPythonModel = triton_model(Kosmos2Grounder)
