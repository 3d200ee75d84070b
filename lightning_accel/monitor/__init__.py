"""Inspection of the optimizer in TensorBoard."""

from .callback import OptimizerStatsMonitor

__all__: list[str] = ["OptimizerStatsMonitor"]
