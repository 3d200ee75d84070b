"""`TrainEvalCallback`: the chapter's training/validation bookkeeping, always attached."""

from __future__ import annotations

from ..loop.callback import Callback

__all__ = ["TrainEvalCallback"]


class TrainEvalCallback(Callback):
    """Keeps `learn.training`, `learn.train_iter` and `learn.pct_train` (0 -> 1 over the fit)."""

    order = -10  # runs first, so every other callback sees the counters already updated

    def before_fit(self) -> None:
        self.learn.train_iter = 0
        self.learn.pct_train = 0.0
        self.learn.training = False

    def before_train(self) -> None:
        self.learn.pct_train = self.epoch / self.n_epoch
        self.learn.training = True

    def before_validate(self) -> None:
        self.learn.training = False

    def after_batch(self) -> None:
        if not self.training:
            return
        self.learn.pct_train += 1.0 / (self.n_iter * self.n_epoch)
        self.learn.train_iter += 1
