"""The composable optimizer: AccelOptimizer, stat and step callbacks, recipes, executors."""

__all__: list[str] = []
