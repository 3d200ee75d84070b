"""Warnings that installed Lightning raises about itself, silenced where a fit runs.

Lightning 2.6 builds `torch.utils._pytree.LeafSpec()` each time it wraps a dataloader, and recent
torch releases deprecate that class with a `FutureWarning` about Lightning's own code, which a user
can do nothing about: every fit printed it (and it was most of the test suite's warnings). Only that
message, from that module, is ignored, and only inside `quiet_known_warnings()`; nothing is
filtered globally.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

# (message regex, category, module regex) as `warnings.filterwarnings` takes them.
KNOWN_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        r"lightning\.pytorch\.utilities\._pytree",
    ),
)


@contextlib.contextmanager
def quiet_known_warnings() -> Iterator[None]:
    """Inside the block, `KNOWN_WARNINGS` are not shown; every other warning is."""
    with warnings.catch_warnings():
        for message, category, module in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        yield
