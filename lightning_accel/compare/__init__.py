"""The `lightning-accel compare` application: the chapter's optimizer comparison, end to end."""

from .runner import CompareConfig, CompareError, run_compare

__all__: list[str] = ["CompareConfig", "CompareError", "run_compare"]
