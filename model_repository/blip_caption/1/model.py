"""Triton adapter for blip_caption: the model logic lives in i2tt_server.runners."""

from i2tt_server.runners import BlipCaptioner
from i2tt_server.triton_adapter import triton_model

TritonPythonModel = triton_model(BlipCaptioner)
