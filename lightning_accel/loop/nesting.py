"""The chapter's loop nesting as a small state machine: open a part, close it, cancel it.

The chapter's loop is one helper called inside itself: emit `before_X`, run part X, on X's own
Cancel exception emit `after_cancel_X`, then emit `after_X`. Its parts nest

    fit > epoch > (train | validate) > batch > (backward | step)

A driver (the Lightning adapter, or a test) says where its own loop is: `open("batch")`,
`event("after_pred")`, `close("batch")`. `Nesting` emits the chapter's events for it and turns
each Cancel exception into what the chapter's `try` blocks do:

- the cancelled part and every part inside it become *dead*: they emit nothing more, and
  `open` inside a dead part opens a dead part (the driver reads `is_live` to skip the work);
- `after_cancel_X` and `after_X` are emitted at once, in the context of X's parent, so an
  exception raised there is caught by an outer part, as in the chapter;
- a Cancel exception for a part that is not around the event is a programming error
  (`RuntimeError`), as it would escape the chapter's loop.

Dead parts stay open until the driver closes them: the driver's loop may need to finish the
batch it is in, and `ended` tells it which parts to leave early. Nothing here knows Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .events import CancelException, cancelled_part

__all__ = ["Nesting", "PARENTS"]

# The parts each part may open inside (None: at the top). `validate` at the top is a validation
# run outside a fit (`trainer.validate`); opened inside `train`, it sets the training part aside
# until it closes (Lightning validates in the middle of an epoch with `val_check_interval < 1`).
PARENTS: dict[str, tuple[str | None, ...]] = {
    "fit": (None,),
    "epoch": ("fit",),
    "train": ("epoch",),
    "validate": ("epoch", "train", None),
    "batch": ("train", "validate"),
    "backward": ("batch",),
    "step": ("batch",),
}


class _Frame:
    __slots__ = ("part", "live")

    def __init__(self, part: str, live: bool) -> None:
        self.part, self.live = part, live

    def __repr__(self) -> str:
        return f"{self.part}{'' if self.live else ' (dead)'}"


class Nesting:
    """Where the loop is, and the events that moving through it emits.

    `emit(event_name)` runs the callbacks; Cancel exceptions raised there are handled here.
    """

    def __init__(self, emit: Callable[[str], Any]) -> None:
        self._emit = emit
        self.reset()

    def reset(self) -> None:
        """Forget every open part (after an error, or before a new run)."""
        self._stack: list[_Frame] = []
        self._parked: _Frame | None = None
        self.ended: set[str] = set()

    # ------------------------------------------------------------------ queries
    @property
    def parts(self) -> tuple[str, ...]:
        """The open parts, outermost first (dead ones included)."""
        return tuple(f.part for f in self._stack)

    def is_open(self, part: str) -> bool:
        """Whether `part` is open (possibly dead); a training part set aside counts."""
        if self._parked is not None and self._parked.part == part:
            return True
        return any(f.part == part for f in self._stack)

    def is_live(self, part: str) -> bool:
        """Whether `part` is open and not cancelled."""
        for frame in reversed(self._stack):
            if frame.part == part:
                return frame.live
        return self._parked is not None and self._parked.part == part and self._parked.live

    @property
    def live(self) -> bool:
        """Whether the innermost open part still runs (False when nothing is open)."""
        return bool(self._stack) and self._stack[-1].live

    # ------------------------------------------------------------------ moving through the loop
    def open(self, part: str) -> bool:
        """Enter `part`: emit `before_<part>` if its parent runs. Returns whether `part` runs."""
        stack = self._stack
        top = stack[-1].part if stack else None
        if top not in PARENTS[part]:
            raise RuntimeError(
                f"cannot open `{part}` inside `{top or 'nothing'}`: it opens inside "
                + " or ".join(f"`{p or 'nothing'}`" for p in PARENTS[part])
            )
        if part == "validate" and top == "train":
            self._parked = stack.pop()
        frame = _Frame(part, not stack or stack[-1].live)
        stack.append(frame)
        if frame.live:
            self._emit_at(f"before_{part}", len(stack))
        return frame.live

    def event(self, event_name: str) -> bool:
        """Emit an event inside the innermost part, if it runs. Returns whether it still runs."""
        frame = self._stack[-1]
        if frame.live:
            self._emit_at(event_name, len(self._stack))
        return frame.live

    def close(self, part: str) -> None:
        """Leave `part` normally, and every part inside it: `after_<part>` for those still live.

        Closing a part that is not open does nothing, so a driver may close defensively.
        """
        index = self._index(part)
        if index is None:
            return
        target = self._stack[index]
        while self._close_top() is not target:
            pass

    def end(self, part: str) -> None:
        """End `part` early without it being cancelled here (another rank cancelled it).

        As a cancel, but without `after_cancel_<part>`; recorded in `ended` even when `part` is
        not open, so the driver still leaves its loop.
        """
        self.ended.add(part)
        index = self._index(part)
        if index is not None and self._stack[index].live:
            self._kill_from(index)
            if index == 0 or self._stack[index - 1].live:
                self._emit_at(f"after_{part}", index)

    # ------------------------------------------------------------------ internals
    def _index(self, part: str) -> int | None:
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i].part == part:
                return i
        return None

    def _close_top(self) -> _Frame:
        frame = self._stack.pop()
        if frame.live:
            self._emit_at(f"after_{frame.part}", len(self._stack))
        if frame.part == "validate" and self._parked is not None:
            self._stack.append(self._parked)
            self._parked = None
        return frame

    def _emit_at(self, event_name: str, depth: int) -> None:
        """Emit an event whose enclosing parts are `self._stack[:depth]`, handling Cancels."""
        try:
            self._emit(event_name)
        except CancelException as exc:
            part = cancelled_part(exc)
            for index in range(depth - 1, -1, -1):
                if self._stack[index].part == part:
                    break
            else:
                before = "before_" + part
                raise RuntimeError(
                    f"{type(exc).__name__} raised in `{event_name}`, outside the part it "
                    f"cancels; it can be raised in {before} and in the events inside that part "
                    "(see docs/callbacks.md, 'Cancel exceptions')."
                ) from exc
            self._cancel_at(index)

    def _cancel_at(self, index: int) -> None:
        part = self._stack[index].part
        self.ended.add(part)
        self._kill_from(index)
        self._emit_at(f"after_cancel_{part}", index)
        # An exception raised in after_cancel_<part> and caught further out skips after_<part>.
        if index == 0 or self._stack[index - 1].live:
            self._emit_at(f"after_{part}", index)

    def _kill_from(self, index: int) -> None:
        killed = self._stack[index:]
        for frame in killed:
            frame.live = False
        if self._parked is not None and any(f.part in ("fit", "epoch") for f in killed):
            # The training part set aside belongs to the epoch: an epoch or fit cancel ends it.
            self._parked.live = False

    def __repr__(self) -> str:
        parked = f", set aside: {self._parked}" if self._parked is not None else ""
        return f"Nesting({' > '.join(map(repr, self._stack)) or 'nothing open'}{parked})"
