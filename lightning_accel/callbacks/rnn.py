"""Callbacks for recurrent models: `ModelResetter` and `RNNRegularizer` (AR and TAR)."""

from __future__ import annotations

from typing import Any

from ..loop.callback import Callback

__all__ = ["ModelResetter", "RNNRegularizer"]


class ModelResetter(Callback):
    """Call `model.reset()` before training, before validation and after the fit.

    A stateful RNN carries its hidden state from batch to batch; each phase starts afresh.
    """

    def before_train(self) -> None:
        self.model.reset()

    def before_validate(self) -> None:
        self.model.reset()

    def after_fit(self) -> None:
        self.model.reset()


class RNNRegularizer(Callback):
    """Activation regularization (AR, `alpha`) and temporal activation regularization (TAR, `beta`).

    The model returns `(output, raw_out, out)`: the prediction, the last layer's activations
    before dropout and after dropout, each `(batch, seq, hidden)` (or a list of them per layer:
    the last is used). The prediction goes on to the loss; during training the loss gains
    `alpha * mean(out**2)` and `beta * mean((raw_out[:, 1:] - raw_out[:, :-1])**2)`.
    """

    def __init__(self, alpha: float = 0.0, beta: float = 0.0) -> None:
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be non-negative, got {alpha!r}, {beta!r}")
        self.alpha, self.beta = alpha, beta

    def after_pred(self) -> None:
        pred = self.pred
        if not isinstance(pred, (tuple, list)) or len(pred) != 3:
            raise TypeError(
                "RNNRegularizer needs the model to return (output, raw_out, out); "
                f"got {type(pred).__name__}"
            )
        self.raw_out, self.out = _last(pred[1]), _last(pred[2])
        self.learn.pred = pred[0]

    def after_loss(self) -> None:
        if not self.training:
            return
        loss = self.learn.loss
        if self.alpha:
            loss = loss + self.alpha * self.out.float().pow(2).mean()
        if self.beta and self.raw_out.shape[1] > 1:
            diff = self.raw_out[:, 1:] - self.raw_out[:, :-1]
            loss = loss + self.beta * diff.float().pow(2).mean()
        self.learn.loss = loss


def _last(x: Any) -> Any:
    return x[-1] if isinstance(x, (list, tuple)) else x
