"""Vision data modules and models for reproducing the chapter."""

__all__: list[str] = []
