"""The schedules as plain Lightning callbacks, for users who build their own `Trainer`.

`Trainer(callbacks=[OneCycleSchedule(3e-3)], max_epochs=3)` gives the same per-step values as
`fit_one_cycle(module, 3, 3e-3)`: the position comes from the trainer (see `scheduling`), so the
schedule fits whatever `max_epochs`/`max_steps`, `limit_train_batches` and
`accumulate_grad_batches` say. They drive an `AccelOptimizer` or any `torch.optim` optimizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl

from .hyper_scheduling import HyperScheduling, ScheduleSpec
from .policies import FlatCosPolicy, OneCyclePolicy, SGDRPolicy

__all__ = ["HyperScheduleCallback", "OneCycleSchedule", "FlatCosSchedule", "SGDRSchedule"]


def _only_optimizer(trainer: pl.Trainer, owner: str) -> Any:
    optimizers = trainer.optimizers
    if len(optimizers) != 1:
        raise ValueError(
            f"{owner} schedules exactly one optimizer, but the module configures {len(optimizers)}"
        )
    return optimizers[0]


class HyperScheduleCallback(pl.Callback):
    """Set hyper-parameters from `scheds` before every training batch (Lightning callback form
    of `ParamScheduler`); `hps` records what was set, per batch."""

    def __init__(self, scheds: ScheduleSpec) -> None:
        self._sched = HyperScheduling(scheds, owner=type(self).__name__)

    @property
    def hps(self) -> dict[str, list[float]]:
        return self._sched.hps

    @property
    def scheds(self) -> dict[str, Any]:
        return self._sched.scheds

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sched.start(_only_optimizer(trainer, type(self).__name__), pl_module)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._sched.apply(trainer, _only_optimizer(trainer, type(self).__name__))

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._sched.record(_only_optimizer(trainer, type(self).__name__))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sched.finish()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._sched.finish()

    def state_dict(self) -> dict[str, Any]:
        return self._sched.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._sched.load_state_dict(state_dict)


class OneCycleSchedule(HyperScheduleCallback):
    """The 1cycle policy (see `fit_one_cycle`); `lr_max=None` uses the optimizer's lrs."""

    def __init__(
        self,
        lr_max: Any = None,
        div: float = 25.0,
        div_final: float = 1e5,
        pct_start: float = 0.25,
        moms: Sequence[float] | None = None,
        wd: float | None = None,
    ) -> None:
        policy = OneCyclePolicy(
            lr_max=lr_max, div=div, div_final=div_final, pct_start=pct_start, moms=moms, wd=wd
        )
        super().__init__(policy)


class FlatCosSchedule(HyperScheduleCallback):
    """Flat learning rate, then cosine annealing (see `fit_flat_cos`)."""

    def __init__(
        self,
        lr: Any = None,
        div_final: float = 1e5,
        pct_start: float = 0.75,
        wd: float | None = None,
    ) -> None:
        super().__init__(FlatCosPolicy(lr=lr, div_final=div_final, pct_start=pct_start, wd=wd))


class SGDRSchedule(HyperScheduleCallback):
    """Cosine annealing with warm restarts (see `fit_sgdr`); train for `n_epoch` epochs of the
    policy (`SGDRPolicy(...).n_epoch`) so the cycles end on epoch boundaries."""

    def __init__(
        self,
        n_cycles: int,
        cycle_len: int,
        lr_max: Any = None,
        cycle_mult: int = 2,
        wd: float | None = None,
    ) -> None:
        self.policy = SGDRPolicy(
            n_cycles=n_cycles, cycle_len=cycle_len, lr_max=lr_max, cycle_mult=cycle_mult, wd=wd
        )
        super().__init__(self.policy)
