"""Triton adapter for trocr_ocr: the model logic lives in i2tt_server.runners."""

from i2tt_server.runners import TrOCRReader
from i2tt_server.triton_adapter import TritonModel


class TritonPythonModel(TritonModel):
    runner_class = TrOCRReader
