"""The chapter's five optimizer recipes: optimizer, schedule, learning rate, published accuracy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from ..optim.callbacks import (
    average_grad,
    average_sqr_grad,
    momentum_step,
    rms_prop_step,
    sgd_step,
)
from ..optim.optimizer import AccelOptimizer
from ..optim.recipes import SGD, Adam


@dataclass(frozen=True)
class Recipe:
    """An optimizer and how the chapter trains with it, with the accuracy it published."""

    name: str
    opt_func: Callable[..., torch.optim.Optimizer]
    opt_label: str
    lr: float
    one_cycle: bool
    moms: tuple[float, float, float] | None
    reference_accuracy: float

    def description(self, epochs: int) -> str:
        if not self.one_cycle:
            return f"{self.opt_label}, fit({epochs}, {self.lr:g})"
        moms = "" if self.moms is None else f", moms={self.moms}"
        return f"{self.opt_label}, fit_one_cycle({epochs}, {self.lr:g}{moms})"


# The chapter's recipes, in its order, with its 3-epoch Imagenette accuracies (ResNet-34 from
# scratch, 128 px crops, batch 128, mixed precision).
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("adam", Adam, "Adam", 3e-3, True, None, 0.595),
        Recipe("sgd", SGD, "SGD", 0.03, True, (0.0, 0.0, 0.0), 0.409),
        Recipe(
            "sgd_cb",
            partial(AccelOptimizer, cbs=[sgd_step]),
            "[sgd_step]",
            0.03,
            False,
            None,
            0.445,
        ),
        Recipe(
            "momentum",
            partial(AccelOptimizer, cbs=[average_grad, momentum_step], mom=0.9),
            "[average_grad, momentum_step] mom=0.9",
            0.03,
            True,
            None,
            0.419,
        ),
        Recipe(
            "rmsprop",
            partial(AccelOptimizer, cbs=[average_sqr_grad, rms_prop_step], sqr_mom=0.99),
            "[average_sqr_grad, rms_prop_step] sqr_mom=0.99",
            0.003,
            True,
            None,
            0.545,
        ),
    )
}
