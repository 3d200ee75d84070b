"""Inspection of the optimizer in TensorBoard."""

__all__: list[str] = []
