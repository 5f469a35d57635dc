"""Triton adapter for trocr_ocr: the model logic lives in i2tt_server.runners."""

from i2tt_server.runners import TrOCRReader
from i2tt_server.triton_adapter import triton_model

TritonPythonModel = triton_model(TrOCRReader)
