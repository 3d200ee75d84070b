"""The only part of the package that knows Lightning's loop: hooks in, the chapter's events out."""

from .bridge import CallbackBridge

__all__: list[str] = ["CallbackBridge"]
