"""The `lightning-accel compare` application: the chapter's optimizer comparison, end to end."""

from .errors import CompareError, CompareInterrupted
from .recipes import RECIPES
from .runner import run_compare
from .settings import NAMED_DATA, CompareConfig

__all__: list[str] = [
    "NAMED_DATA",
    "RECIPES",
    "CompareConfig",
    "CompareError",
    "CompareInterrupted",
    "run_compare",
]
