"""Inspection of the optimizer in TensorBoard."""

from .stats_monitor import OptimizerStatsMonitor

__all__: list[str] = ["OptimizerStatsMonitor"]
