"""Chapter 16 of *Deep Learning for Coders* ("The Training Process"), cell by cell, in Lightning.

Each function below is one cell (or a few) of the chapter, in the same order, with the chapter's
code next to ours in its docstring. By default it trains a ResNet-34 without pretraining on
scikit-learn's digits (offline, small); `--data imagenette` uses the chapter's Imagenette-160.

    python examples/reproduce_chapter.py                     # every cell, digits, 3 epochs each
    python examples/reproduce_chapter.py --cells generic_sgd adam --epochs 1
    python examples/reproduce_chapter.py --epochs 1 --limit-batches 3   # a quick look

`--limit-batches N` keeps N training and N validation batches per epoch, and limits `lr_find`
to N steps as well (too few for suggestions below 7: it then says so and prints nan);
`--lr-find-iters` sets lr_find's steps explicitly (default: 100, or N with --limit-batches).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
import torchmetrics
from torch import nn

from lightning_accel import (
    SGD,
    AccelModule,
    AccelOptimizer,
    Adam,
    Callback,
    CancelFitException,
    Recorder,
    average_grad,
    average_sqr_grad,
    event,
    fit,
    fit_one_cycle,
    l2_reg,
    lr_find,
    momentum_step,
    rms_prop_step,
    weight_decay,
)
from lightning_accel.vision import DigitsDataModule, ImagenetteDataModule, vision_model


class Chapter:
    """The chapter's `get_data` and `get_learner`, with the settings of one run."""

    def __init__(
        self,
        data: str = "digits",
        arch: str = "resnet34",
        epochs: int = 3,
        size: int | None = None,
        batch_size: int | None = None,
        limit_batches: int | None = None,
        lr_find_iters: int | None = None,
        progress_bar: bool = True,
    ) -> None:
        self.arch, self.epochs = arch, epochs
        # --limit-batches is for a quick run: it limits lr_find's steps too, unless told otherwise.
        self.lr_find_iters = lr_find_iters or limit_batches or 100
        if data == "digits":
            self.dls = DigitsDataModule(size=size or 32, batch_size=batch_size or 64)
        elif data == "imagenette":
            # get_data(URLs.IMAGENETTE_160, 160, 128)
            self.dls = ImagenetteDataModule(size=size or 128, batch_size=batch_size or 128)
        else:
            raise ValueError(f"data must be one of ['digits', 'imagenette'], got {data!r}")
        self.trainer_kwargs: dict[str, Any] = dict(
            accelerator="auto",
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress_bar,
            num_sanity_val_steps=0,
            limit_train_batches=limit_batches,
            limit_val_batches=limit_batches,
        )
        self.initial = None

    def get_learner(self, loss_func: Callable | None = None, **kwargs: Any) -> AccelModule:
        """`vision_learner(dls, resnet34, pretrained=False, metrics=accuracy, **kwargs)`.

        Every learner starts from the same random weights, so the cells compare optimizers only.
        """
        model = vision_model(self.arch, n_out=self.dls.num_classes)
        if self.initial is None:
            self.initial = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.initial)
        metric = torchmetrics.Accuracy(task="multiclass", num_classes=self.dls.num_classes)
        loss_func = loss_func or nn.CrossEntropyLoss()
        return AccelModule(model, loss_func, metrics={"accuracy": metric}, **kwargs)

    def fit_one_cycle(self, learn: AccelModule, lr: float, **kwargs: Any) -> list:
        pl.seed_everything(0, verbose=False)
        fit_one_cycle(learn, self.epochs, lr, datamodule=self.dls, **kwargs, **self.trainer_kwargs)
        return learn.bridge.learn.recorder.values

    def fit(self, learn: AccelModule, lr: float) -> list:
        pl.seed_everything(0, verbose=False)
        fit(learn, self.epochs, lr, datamodule=self.dls, **self.trainer_kwargs)
        return learn.bridge.learn.recorder.values


# ------------------------------------------------------------------------ Establishing a baseline


def baseline(ch: Chapter) -> list:
    """learn = get_learner(); learn.fit_one_cycle(3, 0.003)  -- fastai's default, Adam."""
    return ch.fit_one_cycle(ch.get_learner(opt_func=Adam), 3e-3)


def sgd_lr_find(ch: Chapter) -> tuple:
    """learn = get_learner(opt_func=SGD); learn.lr_find()"""
    learn = ch.get_learner(opt_func=SGD)
    kwargs = {k: v for k, v in ch.trainer_kwargs.items() if not k.startswith("limit_val")}
    kwargs.pop("num_sanity_val_steps")
    # The training batches cycle: lr_find runs its own number of steps, ch.lr_find_iters.
    kwargs.pop("limit_train_batches")
    result = lr_find(learn, ch.dls, num_it=ch.lr_find_iters, show_plot=False, **kwargs)
    shown = ", ".join(f"{name}={lr:.3g}" for name, lr in result._asdict().items())
    print(f"  lr_find, {ch.lr_find_iters} steps from lr 1e-07 to 10: {shown}")
    return result


def plain_sgd(ch: Chapter) -> list:
    """learn.fit_one_cycle(3, 0.03, moms=(0,0,0))  -- momentum off."""
    return ch.fit_one_cycle(ch.get_learner(opt_func=SGD), 0.03, moms=(0, 0, 0))


# ------------------------------------------------------------------------ A generic optimizer


def sgd_cb(p: torch.Tensor, lr: float, **kwargs: Any) -> None:
    """def sgd_cb(p, lr, **kwargs): p.data.add_(-lr, p.grad.data)"""
    p.data.add_(p.grad.data, alpha=-lr)


def generic_sgd(ch: Chapter) -> list:
    """opt_func = partial(Optimizer, cbs=[sgd_cb]); learn.fit(3, 0.03)"""
    opt_func = partial(AccelOptimizer, cbs=[sgd_cb])
    return ch.fit(_no_decay_learner(ch, opt_func), 0.03)


def _no_decay_learner(ch: Chapter, opt_func: Callable) -> AccelModule:
    # These optimizers have no weight-decay callback, so there are no decay-free parameter groups
    # (batchnorm, biases) to set up either.
    return ch.get_learner(opt_func=opt_func, wd_bn_bias=True)


# ------------------------------------------------------------------------ Momentum


def momentum(ch: Chapter) -> list:
    """opt_func = partial(Optimizer, cbs=[average_grad, momentum_step], mom=0.9)
    learn.fit_one_cycle(3, 0.03)"""
    opt_func = partial(AccelOptimizer, cbs=[average_grad, momentum_step], mom=0.9)
    return ch.fit_one_cycle(_no_decay_learner(ch, opt_func), 0.03)


# ------------------------------------------------------------------------ RMSProp


def rms_prop(ch: Chapter) -> list:
    """opt_func = partial(Optimizer, cbs=[average_sqr_grad, rms_prop_step], sqr_mom=0.99, eps=1e-7)
    learn.fit_one_cycle(3, 0.003)"""
    opt_func = partial(
        AccelOptimizer, cbs=[average_sqr_grad, rms_prop_step], sqr_mom=0.99, eps=1e-7
    )
    return ch.fit_one_cycle(_no_decay_learner(ch, opt_func), 3e-3)


# ------------------------------------------------------------------------ Adam


def adam(ch: Chapter) -> list:
    """Adam = momentum + RMSProp + debiasing: fastai's default, as in the baseline."""
    return baseline(ch)


# ------------------------------------------------------------------------ Decoupled weight decay


def decoupled_weight_decay(ch: Chapter) -> dict[str, float]:
    """new_weight = weight - lr*weight.grad - lr*wd*weight  versus  weight.grad += wd*weight.

    The same for plain SGD, different once the gradient is divided by Adam's denominator: one
    step of each, from the same weight and gradient.
    """
    results = {}
    for name, decay in (("decoupled", weight_decay), ("l2", l2_reg)):
        w = nn.Parameter(torch.tensor([1.0, 1.0]))
        w.grad = torch.tensor([1e-3, 1.0])
        adam_cbs = Adam([w], lr=0.1).cbs[1:]  # Adam's stats and step, without its decay
        opt = AccelOptimizer([w], [decay, *adam_cbs], lr=0.1, wd=0.5)
        opt.step()
        results[name] = w.detach().tolist()
        print(f"  {name:9s} weight decay, one Adam step: {results[name]}")
    return results


# ------------------------------------------------------------------------ Callbacks


class ModelResetter(Callback):
    """Call the model's `reset` before training and before validation (the chapter's)."""

    def before_train(self):
        self.model.reset()

    def before_validate(self):
        self.model.reset()


class TerminateOnNaNCallback(Callback):
    """run_before=Recorder; raise CancelFitException when the loss is inf or NaN (the chapter's)."""

    run_before = Recorder

    def after_batch(self):
        if torch.isinf(self.loss) or torch.isnan(self.loss):
            raise CancelFitException


def callbacks(ch: Chapter) -> dict[str, Any]:
    """The events, and TerminateOnNaNCallback stopping a fit whose loss has become NaN."""
    print("  events:", ", ".join(name for name in dir(event) if not name.startswith("_")))
    loss_func = _nan_after(nn.CrossEntropyLoss(), n_calls=2)  # NaN from the third batch on
    learn = ch.get_learner(loss_func, opt_func=Adam, cbs=[TerminateOnNaNCallback()])
    values = ch.fit_one_cycle(learn, 3e-3)
    steps = len(learn.bridge.learn.recorder.losses)
    print(f"  TerminateOnNaNCallback stopped the fit after {steps} recorded batches")
    return {"recorded_batches": steps, "epochs_completed": len(values)}


def _nan_after(loss_func: Callable, n_calls: int) -> Callable:
    calls = 0

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        value = loss_func(pred, target)
        return value * float("nan") if calls > n_calls else value

    return loss


CELLS: dict[str, Callable[[Chapter], Any]] = {
    "baseline": baseline,
    "sgd_lr_find": sgd_lr_find,
    "plain_sgd": plain_sgd,
    "generic_sgd": generic_sgd,
    "momentum": momentum,
    "rms_prop": rms_prop,
    "adam": adam,
    "decoupled_weight_decay": decoupled_weight_decay,
    "callbacks": callbacks,
}


def main(cells: Sequence[str] | None = None, **settings: Any) -> dict[str, Any]:
    """Run the named cells (all by default) in the chapter's order; returns each cell's result."""
    names = list(CELLS) if cells is None else list(cells)
    unknown = [n for n in names if n not in CELLS]
    if unknown:
        raise ValueError(f"cells must be names from {list(CELLS)}, got unknown {unknown}")
    ch = Chapter(**settings)
    results = {}
    for name in names:
        print(f"\n# {name}: {CELLS[name].__doc__.splitlines()[0]}")
        results[name] = CELLS[name](ch)
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line the module docstring shows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="*", choices=list(CELLS), default=None)
    parser.add_argument("--data", choices=["digits", "imagenette"], default="digits")
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--epochs", type=_positive, default=3)
    parser.add_argument(
        "--limit-batches",
        type=_positive,
        default=None,
        help="training and validation batches per epoch, and lr_find's steps",
    )
    parser.add_argument(
        "--lr-find-iters",
        type=_positive,
        default=None,
        help="lr_find's steps (default: 100, or --limit-batches when given)",
    )
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


if __name__ == "__main__":
    args = parse_args()
    main(
        args.cells,
        data=args.data,
        arch=args.arch,
        epochs=args.epochs,
        limit_batches=args.limit_batches,
        lr_find_iters=args.lr_find_iters,
    )
