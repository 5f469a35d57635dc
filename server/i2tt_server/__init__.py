"""I2TT server side: model logic, Triton glue, weights tooling and the launcher."""

__version__ = "0.1.0"
