"""Training recipes: hyper-parameter schedules, fit helpers and the learning-rate finder."""

__all__: list[str] = []
