"""The callback system: events, Cancel exceptions, the Callback base, the Lightning bridge, AccelModule and shipped callbacks."""

__all__: list[str] = []
