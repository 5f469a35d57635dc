"""I2TT client: call the I2TT models on a Triton server over gRPC.

>>> from i2tt_client import I2TTClient
>>> with I2TTClient("localhost:8001") as client:
...     client.describe(["a.jpg", "b.png"])      # [Description(caption=..., tags=[...]), ...]
...     client.infer("t5_tags", {"TEXT": "a dog on a beach"})   # any model: {"TAGS": [...]}
"""

from .aio import AsyncI2TTClient
from .client import I2TTClient
from .errors import (AuthenticationError, DeadlineExceededError, I2TTError, InvalidInputError,
                     ModelRestartingError, ServerError, UnavailableError)
from .results import (Caption, Description, Entity, Grounding, Health, ModelHealth, OCRText,
                      PageText, Result, Tags, TextLine)

__version__ = "0.1.0"

__all__ = [
    "I2TTClient", "AsyncI2TTClient",
    "I2TTError", "InvalidInputError", "UnavailableError", "ModelRestartingError",
    "DeadlineExceededError", "ServerError", "AuthenticationError",
    "Result", "Caption", "Grounding", "Entity", "OCRText", "PageText", "TextLine", "Tags",
    "Description", "Health",
    "ModelHealth",
]
