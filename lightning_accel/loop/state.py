"""`Learner`: the training state every callback reads, kept up to date by the bridge."""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Learner", "DataLoaders"]


class DataLoaders(NamedTuple):
    """The fit's loaders, as the chapter's `learn.dls.train` / `learn.dls.valid`."""

    train: Any
    valid: Any


class Learner:
    """The chapter's learner state, without the loop: the bridge drives the loop through Lightning.

    Every attribute of the chapter is here (`model, opt, loss_func, dl, xb, yb, pred, loss, epoch,
    n_epoch, iter, n_iter, train_iter, pct_train, training, smooth_loss, cbs`, ...), and each
    callback is reachable by its `name` (`learn.recorder`).
    """

    def __init__(self, bridge: Any) -> None:
        self._bridge = bridge
        self.model: Any = None
        self.loss_func: Any = None
        self.opt_func: Any = None
        self.metrics: Any = None
        self.trainer: Any = None
        self.pl_module: Any = None
        self.dl: Any = None
        self.xb: tuple = ()
        self.yb: tuple = ()
        self.pred: Any = None
        self.loss: Any = None
        self.epoch: int = 0
        self.n_epoch: int = 1
        self.iter: int = 0
        self.n_iter: int = 0
        self.train_iter: int = 0
        self.pct_train: float = 0.0
        self.training: bool = False
        self.smooth_loss: Any = None

    @property
    def cbs(self) -> list:
        """The callbacks in the order they run."""
        return self._bridge.cbs

    @property
    def opt(self) -> Any:
        """The optimizer (unwrapped from Lightning's `LightningOptimizer`)."""
        trainer = self.trainer
        if trainer is None:
            return None
        optimizers = getattr(trainer, "optimizers", None) or [None]
        return optimizers[0]

    @property
    def dls(self) -> DataLoaders | None:
        """The fit's training and validation loaders, once Lightning has loaded them."""
        if self.trainer is None:
            return None
        return DataLoaders(
            getattr(self.trainer, "train_dataloader", None),
            getattr(self.trainer, "val_dataloaders", None),
        )

    @property
    def x(self) -> Any:
        """The input, de-tuplified: `xb[0]` when there is one input."""
        return self.xb[0] if len(self.xb) == 1 else self.xb

    @property
    def y(self) -> Any:
        """The target, de-tuplified: `yb[0]` when there is one target."""
        return self.yb[0] if len(self.yb) == 1 else self.yb

    def has_state(self, name: str) -> bool:
        """Whether `name` is a learner attribute (used by the shadowing warning)."""
        return name in vars(self) or hasattr(type(self), name)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not set above: callbacks by name, `learn.recorder`.
        if not name.startswith("_"):
            cb = self._bridge.callback_named(name)
            if cb is not None:
                return cb
        raise AttributeError(f"the learner has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"Learner(model={type(self.model).__name__}, cbs={self.cbs})"
