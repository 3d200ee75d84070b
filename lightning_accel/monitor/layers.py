"""How parameters are named and grouped into the layers the monitor reports on.

A grouping is a function from a parameter's qualified name (``layer1.0.conv1.weight``) to the name
of the layer it is reported under, or ``None`` to leave the parameter out.
"""

from __future__ import annotations

import re
from collections.abc import Callable

LayerGrouping = Callable[[str], "str | None"]


def by_module(name: str) -> str:
    """The module path that owns the parameter: weight and bias of one module form one layer."""
    module, _, _ = name.rpartition(".")
    # A parameter registered on the root module has no path; its own name is the clearest label.
    return module or name


def by_depth(depth: int) -> LayerGrouping:
    """Group by the first `depth` components of the module path (``by_depth(1)``: ``layer1``)."""
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int, got {depth!r}")

    def group(name: str) -> str:
        return ".".join(by_module(name).split(".")[:depth])

    return group


def matching(pattern: str, then: LayerGrouping = by_module) -> LayerGrouping:
    """Keep the parameters whose name matches the regex `pattern`, grouped by `then`."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        message = f"pattern must be a valid regular expression, got {pattern!r}: {error}"
        raise ValueError(message) from None

    def group(name: str) -> str | None:
        return then(name) if compiled.search(name) else None

    return group
