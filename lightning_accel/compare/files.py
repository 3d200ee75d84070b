"""Writing files so that an interrupted write never replaces a good file with half of one."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it when the block ends without an error.

    The rename is atomic on POSIX: readers see the old file or the new one, never a partial one,
    and an interrupted block leaves the old file as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    """`path.write_text(text)`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_json(path: Path, data: Any) -> Path:
    """`data` as indented JSON, atomically."""
    return write_text(path, json.dumps(data, indent=1) + "\n")


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)
