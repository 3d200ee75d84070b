"""Where a fit stands in its schedule, and the engine that applies schedules to an optimizer.

Position counts optimizer steps: before the batch that will make optimizer step `k` (counted from
0 over the whole fit), the position is `k / total`, where `total` is Lightning's
`trainer.estimated_stepping_batches` (it accounts for `max_epochs`/`max_steps`,
`limit_train_batches` and `accumulate_grad_batches`). Without gradient accumulation this is the
reference's `train_iter / total_iters`. With accumulation every batch of one accumulation window
sees the value of the step it feeds, so the same curve comes out per optimizer step however the
batches are split. Because `trainer.global_step` is checkpointed, a resumed fit continues the
schedule where it stopped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from .hypers import get_hyper, hyper_names, set_hyper, snapshot_hypers

__all__ = ["total_steps", "schedule_position", "HyperScheduling", "ScheduleSpec"]

Scheds = Mapping[str, Callable[[float], Any]]
# A mapping of schedules, or a factory building one from the optimizer's hyper-parameters
# (one dict per group) and the LightningModule, called at the start of each fit.
ScheduleSpec = Scheds | Callable[[list, Any], Scheds]


def total_steps(trainer: Any) -> int:
    """Optimizer steps the fit will make; a schedule needs it finite and positive."""
    total = trainer.estimated_stepping_batches
    if not (isinstance(total, (int, float)) and math.isfinite(total) and total > 0):
        raise ValueError(
            f"a schedule needs a finite number of training steps, but the trainer estimates "
            f"{total!r}: set max_epochs or max_steps (and use a sized training loader)"
        )
    return int(total)


def schedule_position(trainer: Any, total: int | None = None) -> float:
    """The position in [0, 1] of the next optimizer step: `global_step / total_steps`."""
    total = total_steps(trainer) if total is None else total
    return min(trainer.global_step / total, 1.0)


class HyperScheduling:
    """Schedules applied to an optimizer's hyper-parameters, plus the record of what was set.

    Shared by the bridge callback `ParamScheduler` and the plain Lightning callbacks.
    """

    def __init__(self, scheds: ScheduleSpec, owner: str) -> None:
        self.owner = owner
        if isinstance(scheds, Mapping):
            _check_scheds(scheds, owner)
            self._factory = None
            self.scheds: Scheds = dict(scheds)
        elif callable(scheds):
            self._factory = scheds
            self.scheds = {}
        else:
            raise TypeError(
                f"{owner} scheds must be a mapping of hyper-parameter name to schedule, or a "
                f"callable building one; got {type(scheds).__name__}"
            )
        self.hps: dict[str, list[float]] = {name: [] for name in self.scheds}
        self._start_hypers: list[dict[str, float]] | None = None
        self._restored = False
        self._loaded_hps: dict[str, list[float]] = {}
        self._started = False
        self._module: Any = None
        self._total: int | None = None
        self._torch_scheduler_warned = False

    def start(self, opt: Any, module: Any = None) -> None:
        """Resolve the schedules against `opt` at the start of a fit; checks every name exists."""
        self._total = None
        self._torch_scheduler_warned = False
        if opt is None:  # the optimizer is not created yet: resolve at the first batch
            self._started = False
            return
        restored, self._restored = self._restored, False
        if self._factory is not None:
            if not restored or self._start_hypers is None:
                self._start_hypers = snapshot_hypers(opt)
            self.scheds = dict(self._factory(self._start_hypers, module))
            _check_scheds(self.scheds, self.owner)
        names = hyper_names(opt)
        missing = [n for n in self.scheds if n not in names]
        if missing:
            raise ValueError(
                f"{self.owner} schedules {', '.join(map(repr, missing))}, but the optimizer "
                f"{type(opt).__name__} has no such hyper-parameter; it has: {', '.join(names)}"
            )
        # A resumed fit keeps the record of the steps before the checkpoint.
        loaded = self._loaded_hps if restored else {}
        self.hps = {name: list(loaded.get(name, [])) for name in self.scheds}
        self._module = module
        self._started = True

    def apply(self, trainer: Any, opt: Any) -> None:
        """Set every scheduled hyper-parameter for the coming training batch."""
        if not self._started:
            self.start(opt, getattr(trainer, "lightning_module", None))
        if self._total is None:
            self._total = total_steps(trainer)
            self._warn_torch_scheduler(trainer)
        pct = schedule_position(trainer, self._total)
        for name, sched in self.scheds.items():
            set_hyper(opt, name, sched(pct), check=False)

    def record(self, opt: Any) -> None:
        """Append the value each scheduled name has now (in the last group, as the reference)."""
        for name in self.scheds:
            self.hps[name].append(get_hyper(opt, name, check=False)[-1])

    def finish(self) -> None:
        """The fit is over: a checkpoint loaded from now on belongs to the next fit."""
        self._started = False

    def _warn_torch_scheduler(self, trainer: Any) -> None:
        configs = getattr(trainer, "lr_scheduler_configs", None) or []
        if configs and "lr" in self.scheds and not self._torch_scheduler_warned:
            self._torch_scheduler_warned = True
            names = ", ".join(type(c.scheduler).__name__ for c in configs)
            warnings.warn(
                f"{self.owner} schedules 'lr' and the module also configures {names}: "
                f"{self.owner} sets 'lr' before every training batch, so its values win and "
                "the torch scheduler's changes to 'lr' are overwritten.",
                UserWarning,
                stacklevel=2,
            )

    def state_dict(self) -> dict[str, Any]:
        # Plain floats only, so checkpoints load with torch.load(weights_only=True).
        return {
            "start_hypers": self._start_hypers,
            "hps": {name: list(values) for name, values in self.hps.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._loaded_hps = dict(state.get("hps") or {})
        if self._factory is not None and state.get("start_hypers") is not None:
            self._start_hypers = state["start_hypers"]
        self._restored = True
        if self._started:
            # Restored after the fit started (the bridge, or restore_checkpoint_after_setup).
            if self._factory is not None and self._start_hypers is not None:
                self.scheds = dict(self._factory(self._start_hypers, self._module))
            self.hps = {name: list(self._loaded_hps.get(name, [])) for name in self.scheds}
            self._restored = False


def _check_scheds(scheds: Mapping[str, Any], owner: str) -> None:
    for name, sched in scheds.items():
        if not isinstance(name, str):
            raise TypeError(f"{owner} scheds keys must be hyper-parameter names, got {name!r}")
        if not callable(sched):
            raise TypeError(
                f"{owner} schedule for {name!r} must be a callable of the position, got {sched!r}"
            )
