"""Errors that belong to one request, never to the whole batch."""


class InvalidInput(ValueError):
    """The caller sent something unusable; answered with INVALID_ARG for that request alone."""
