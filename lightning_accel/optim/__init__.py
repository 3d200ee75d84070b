"""The composable optimizer: AccelOptimizer, its stat and step callbacks, recipes and execution strategies."""

__all__: list[str] = []
