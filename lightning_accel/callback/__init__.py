"""Callback system: events, Cancel exceptions, Callback, the bridge, AccelModule, callbacks."""

__all__: list[str] = []
