"""The chapter's one-line fits on Lightning: `fit`, `fit_one_cycle`, `fit_flat_cos`, `fit_sgdr`.

Each builds a `Trainer` (extra keyword arguments go to it), runs the fit with a `ParamScheduler`
for its policy and returns the trainer. An `AccelModule` gets the scheduler (and `cbs`) in its
own bridge for the duration of the fit (`AccelModule.added_cbs`), so its Recorder sees the
schedule; a plain `LightningModule` gets a `CallbackBridge` holding them in the trainer's
callbacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import lightning.pytorch as pl

from ..lightning.bridge import CallbackBridge
from ..lightning.known_warnings import quiet_known_warnings
from ..loop.callback import Callback
from ..module import AccelModule
from .param_scheduler import ParamScheduler
from .policies import ConstantPolicy, FlatCosPolicy, OneCyclePolicy, SGDRPolicy

__all__ = ["fit", "fit_one_cycle", "fit_flat_cos", "fit_sgdr"]


def _check_epochs(n_epoch: Any) -> None:
    if isinstance(n_epoch, bool) or not isinstance(n_epoch, int) or n_epoch < 1:
        raise ValueError(f"n_epoch must be a positive integer, got {n_epoch!r}")


def _run(
    module: pl.LightningModule,
    n_epoch: int,
    policy: Any,
    datamodule: pl.LightningDataModule | None,
    cbs: Iterable[Callback] | None,
    trainer_kwargs: dict[str, Any],
    **fit_kwargs: Any,
) -> pl.Trainer:
    _check_epochs(n_epoch)
    if "max_epochs" in trainer_kwargs:
        raise ValueError("give the number of epochs as n_epoch, not max_epochs")
    cbs = list(cbs or ())
    for cb in cbs:
        if not isinstance(cb, Callback):
            raise TypeError(
                f"cbs must be lightning_accel Callbacks, got {type(cb).__name__}; "
                "pass Lightning callbacks as callbacks=[...]"
            )
    added = [ParamScheduler(policy), *cbs] if policy is not None else cbs
    if isinstance(module, AccelModule):
        trainer = pl.Trainer(max_epochs=n_epoch, **trainer_kwargs)
        with module.added_cbs(*added), quiet_known_warnings():
            trainer.fit(module, datamodule=datamodule, **fit_kwargs)
        return trainer
    callbacks = list(trainer_kwargs.pop("callbacks", None) or [])
    if added:
        callbacks.append(CallbackBridge(*added))
    trainer = pl.Trainer(max_epochs=n_epoch, callbacks=callbacks, **trainer_kwargs)
    with quiet_known_warnings():
        trainer.fit(module, datamodule=datamodule, **fit_kwargs)
    return trainer


def fit(
    module: pl.LightningModule,
    n_epoch: int,
    lr: float | Sequence[float] | slice | None = None,
    datamodule: pl.LightningDataModule | None = None,
    wd: float | None = None,
    cbs: Iterable[Callback] | None = None,
    *,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    ckpt_path: str | None = None,
    **trainer_kwargs: Any,
) -> pl.Trainer:
    """Train for `n_epoch` epochs at a constant `lr` (the optimizer's own when None)."""
    policy = ConstantPolicy(lr=lr, wd=wd) if (lr is not None or wd is not None) else None
    return _run(
        module,
        n_epoch,
        policy,
        datamodule,
        cbs,
        trainer_kwargs,
        train_dataloaders=train_dataloaders,
        val_dataloaders=val_dataloaders,
        ckpt_path=ckpt_path,
    )


def fit_one_cycle(
    module: pl.LightningModule,
    n_epoch: int,
    lr_max: float | Sequence[float] | slice | None = None,
    datamodule: pl.LightningDataModule | None = None,
    div: float = 25.0,
    div_final: float = 1e5,
    pct_start: float = 0.25,
    wd: float | None = None,
    moms: Sequence[float] | None = None,
    cbs: Iterable[Callback] | None = None,
    *,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    ckpt_path: str | None = None,
    **trainer_kwargs: Any,
) -> pl.Trainer:
    """Train with the 1cycle policy: lr warms from `lr_max/div` to `lr_max` over `pct_start` of
    the steps, then anneals to `lr_max/div_final`; momentum runs through `moms` the opposite way
    (the module's `moms`, else (0.95, 0.85, 0.95)). `lr_max=None` uses the optimizer's lrs."""
    policy = OneCyclePolicy(
        lr_max=lr_max, div=div, div_final=div_final, pct_start=pct_start, moms=moms, wd=wd
    )
    return _run(
        module,
        n_epoch,
        policy,
        datamodule,
        cbs,
        trainer_kwargs,
        train_dataloaders=train_dataloaders,
        val_dataloaders=val_dataloaders,
        ckpt_path=ckpt_path,
    )


def fit_flat_cos(
    module: pl.LightningModule,
    n_epoch: int,
    lr: float | Sequence[float] | slice | None = None,
    datamodule: pl.LightningDataModule | None = None,
    div_final: float = 1e5,
    pct_start: float = 0.75,
    wd: float | None = None,
    cbs: Iterable[Callback] | None = None,
    *,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    ckpt_path: str | None = None,
    **trainer_kwargs: Any,
) -> pl.Trainer:
    """Train at a flat `lr` for `pct_start` of the steps, then anneal it to `lr/div_final`."""
    policy = FlatCosPolicy(lr=lr, div_final=div_final, pct_start=pct_start, wd=wd)
    return _run(
        module,
        n_epoch,
        policy,
        datamodule,
        cbs,
        trainer_kwargs,
        train_dataloaders=train_dataloaders,
        val_dataloaders=val_dataloaders,
        ckpt_path=ckpt_path,
    )


def fit_sgdr(
    module: pl.LightningModule,
    n_cycles: int,
    cycle_len: int,
    lr_max: float | Sequence[float] | slice | None = None,
    datamodule: pl.LightningDataModule | None = None,
    cycle_mult: int = 2,
    wd: float | None = None,
    cbs: Iterable[Callback] | None = None,
    *,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    ckpt_path: str | None = None,
    **trainer_kwargs: Any,
) -> pl.Trainer:
    """Train `n_cycles` cosine cycles from `lr_max` to 0, the first `cycle_len` epochs long and
    each next one `cycle_mult` times longer (SGD with warm restarts)."""
    policy = SGDRPolicy(
        n_cycles=n_cycles, cycle_len=cycle_len, lr_max=lr_max, cycle_mult=cycle_mult, wd=wd
    )
    return _run(
        module,
        policy.n_epoch,
        policy,
        datamodule,
        cbs,
        trainer_kwargs,
        train_dataloaders=train_dataloaders,
        val_dataloaders=val_dataloaders,
        ckpt_path=ckpt_path,
    )
