"""Typed errors, so a caller can tell whose fault a failure is and whether to try again.

- :class:`InvalidInputError` — the caller's input is unusable (which input, and why);
  retrying the same input cannot help.
- :class:`UnavailableError` — the server is down, overloaded or unreachable; retryable.
- :class:`ModelRestartingError` — the model's process died, or the model is reloading
  after that: the request never ran; retried by default within the deadline.
- :class:`DeadlineExceededError` — the call's deadline passed before an answer came.
- :class:`AuthenticationError` — the server wants an API key (or another one).
- :class:`ServerError` — anything else the server reported (an internal failure, an
  unknown model).
"""

from __future__ import annotations


class I2TTError(Exception):
    """Base class of every error this package raises for a call.

    ``index`` is the position of the failing input in the list that was sent (0 for a
    single input); ``model`` the Triton model that was called.
    """

    retryable = False

    def __init__(self, message: str, *, index: int | None = None, model: str | None = None,
                 status: str | None = None):
        super().__init__(message)
        self.message = message
        self.index = index
        self.model = model
        self.status = status
        self.attempts = 1
        # Set on the error raised with errors="raise" for a list: every result and error, in
        # input order, so one bad item never loses the others.
        self.results: list | None = None

    def __str__(self) -> str:
        where = f"input {self.index}: " if self.index is not None else ""
        return f"{where}{self.message}"

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, "message": self.message, "index": self.index,
                "model": self.model, "status": self.status, "retryable": self.retryable}


class InvalidInputError(I2TTError, ValueError):
    """The input at ``index`` cannot be processed; ``reason`` says why."""

    def __init__(self, index: int | None, reason: str, **kwargs):
        super().__init__(reason, index=index, **kwargs)

    @property
    def reason(self) -> str:
        return self.message


class UnavailableError(I2TTError):
    """The server could not take the request now (down, overloaded, unreachable)."""

    retryable = True


class ModelRestartingError(UnavailableError):
    """A process of the model died under the request, or the model is being reloaded after
    such a crash (the server heals it): the request never ran, so sending it again is
    safe. The client does so by default, within the call's deadline, whatever ``retries``
    says (that budget is for overload, where retrying adds load)."""

    heals = True


class DeadlineExceededError(I2TTError, TimeoutError):
    """No answer arrived before the call's deadline."""


class ServerError(I2TTError):
    """The server failed the request for a reason that is not the caller's input."""


class AuthenticationError(I2TTError):
    """The server refused the call for want of the right API key; not retryable."""


# Triton answers a restricted protocol's call without the right header with UNAVAILABLE,
# which would otherwise read as retryable overload.
_RESTRICTED = "This protocol is restricted"


# gRPC status names as tritonclient reports them ("StatusCode.X").
_BY_STATUS = {
    "INVALID_ARGUMENT": InvalidInputError,
    "UNAVAILABLE": UnavailableError,
    "RESOURCE_EXHAUSTED": UnavailableError,  # a full queue is overload, not a bad input
    "DEADLINE_EXCEEDED": DeadlineExceededError,
}


# Triton's answer when a request's timeout ran out while it waited in a queue.
_EXPIRED = "timeout expired"
# Triton's answers while a model heals: the request was handed to a model process that had
# died (INTERNAL "Stub process '<model>_0_1' is not healthy."), or the model is unloaded
# for its reload (NOT_FOUND "Request for unknown model: '<model>' has no available
# versions"; a model the server never had is "... is not found", which stays an error).
_DEAD_PROCESS = "is not healthy"
_RELOADING = "has no available versions"


def from_triton(exc: Exception, *, index: int | None = None, model: str | None = None) -> I2TTError:
    """The typed error for an exception raised by a tritonclient call."""
    status = getattr(exc, "status", None)
    status = status() if callable(status) else status
    message = getattr(exc, "message", None)
    message = message() if callable(message) else message
    message = message or str(exc)
    code = (status or "").rsplit(".", 1)[-1]
    cls = _BY_STATUS.get(code, ServerError)
    if _RESTRICTED in message:
        cls = AuthenticationError
    elif (code == "INTERNAL" and "Stub process" in message and _DEAD_PROCESS in message) or \
            (code == "NOT_FOUND" and _RELOADING in message):
        cls = ModelRestartingError
    elif cls is UnavailableError and _EXPIRED in message.lower():
        # The server dropped the request when the timeout it carried (the caller's
        # deadline) ran out in its queue: the caller's deadline passed, not an overload.
        cls = DeadlineExceededError
    if cls is InvalidInputError:
        return InvalidInputError(index, message, model=model, status=code)
    return cls(message, index=index, model=model, status=code or None)
