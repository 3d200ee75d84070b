"""`ParamScheduler`: the chapter's callback that sets hyper-parameters from schedule functions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..callbacks.recorder import Recorder
from ..loop.callback import Callback
from .functions import Value
from .hyper_scheduling import HyperScheduling, ScheduleSpec

__all__ = ["ParamScheduler"]


class ParamScheduler(Callback):
    """Set hyper-parameters from schedules before every training batch, and record them.

    `scheds` maps a hyper-parameter name (`lr`, `mom`, `sqr_mom`, `wd`, `eps`, or any an optimizer
    callback declares) to a schedule of the training position; a schedule may return one value
    per parameter group. `scheds` may also be a callable `(hypers, module) -> mapping`, called at
    the start of the fit with the optimizer's hyper-parameters (a list of dicts, one per group)
    and the LightningModule, for schedules relative to the optimizer's own values
    (`fit_one_cycle` with no `lr_max`). The position is the optimizer-step count over the fit's
    total (see `lightning_accel.schedule.hyper_scheduling`). What was set is in `hps`, handed to the
    Recorder (`Recorder.set_hps`) at the end of the fit.
    """

    order = 60
    run_valid = False

    def __init__(self, scheds: ScheduleSpec) -> None:
        self._sched = HyperScheduling(scheds, owner="ParamScheduler")

    @property
    def scheds(self) -> Mapping[str, Callable[[float], Value]]:
        """The schedules in use (resolved at the start of the fit when built from a callable)."""
        return self._sched.scheds

    @property
    def hps(self) -> dict[str, list[float]]:
        """Per training batch, the value set for each scheduled name (last parameter group)."""
        return self._sched.hps

    def before_fit(self) -> None:
        self._sched.start(self.learn.opt, getattr(self.learn, "pl_module", None))

    def before_batch(self) -> None:
        self._sched.apply(self.learn.trainer, self.learn.opt)

    def after_batch(self) -> None:
        self._sched.record(self.learn.opt)

    def after_fit(self) -> None:
        self._sched.finish()
        for cb in self.learn.cbs:
            if isinstance(cb, Recorder):
                cb.set_hps(self.hps)

    def state_dict(self) -> dict[str, Any]:
        return self._sched.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sched.load_state_dict(state)
