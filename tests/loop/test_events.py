"""Event names, the Cancel exceptions, and the package's loop core staying free of Lightning."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

from lightning_accel import CancelBatchException, event
from lightning_accel.loop import events
from lightning_accel.loop.events import ALL_EVENTS, CANCEL_EVENTS, CANCELS, EVENTS, PARTS

LOOP = Path(events.__file__).parent


def test_event_namespace_holds_every_event_name():
    assert set(dir(event)) == set(EVENTS) | set(CANCEL_EVENTS)
    for name in ALL_EVENTS:
        assert getattr(event, name) == name
    assert "after_cancel_validate" in CANCEL_EVENTS and "before_step" in EVENTS


def test_every_part_has_its_three_events():
    for part in PARTS:
        assert f"before_{part}" in EVENTS and f"after_{part}" in EVENTS
        assert f"after_cancel_{part}" in CANCEL_EVENTS
    assert len(CANCEL_EVENTS) == len(PARTS) == len(CANCELS)


def test_cancel_exceptions_are_distinct_plain_exceptions():
    names = [n for n in events.__all__ if n.startswith("Cancel") and n != "CancelException"]
    assert len(names) == 7
    for a, b in itertools.combinations(names, 2):
        assert not issubclass(getattr(events, a), getattr(events, b))
    assert issubclass(CancelBatchException, Exception)
    assert not hasattr(CancelBatchException, "cancel_event")  # one table: events.CANCELS


def test_the_loop_core_imports_neither_lightning_nor_torch():
    for path in LOOP.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [(node.module or "").split(".")[0]] if node.level == 0 else []
            else:
                continue
            assert not {"lightning", "torch", "pytorch_lightning"} & set(roots), path.name
