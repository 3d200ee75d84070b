"""`AccelModule`: a LightningModule running the chapter's batch loop, so every event has effect."""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics.aggregation import MeanMetric

from .callbacks.recorder import Recorder
from .lightning.bridge import CallbackBridge, split_batch
from .lightning.internals import grad_scaler
from .loop.callback import Callback, snake_name
from .optim.optimizer import AccelOptimizer
from .optim.recipes import Adam

__all__ = ["AccelModule", "trainable_groups", "NORM_TYPES"]

# A cancelled batch returns None from training_step on purpose (Lightning then skips backward and
# step); Lightning's warning about it would only confuse.
warnings.filterwarnings("ignore", message="`training_step` returned `None`", category=UserWarning)

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)


def trainable_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """The default splitter: one parameter group with every parameter of the model."""
    return [list(model.parameters())]


class AccelModule(pl.LightningModule):
    """Train `model` with the chapter's callbacks, the composable optimizer and Lightning.

    Each batch runs the chapter's loop: split into `xb`/`yb` -> `before_batch` -> `pred` ->
    `after_pred` -> `loss` -> `after_loss` -> `before_backward` -> backward -> `after_backward`
    -> `before_step` -> step -> `after_step` -> `after_batch`; a callback may replace `xb`, `yb`,
    `pred`, `loss` or the gradients, and Cancel any part. Its `bridge` is installed through
    `configure_callbacks`.

    The fit helpers (`fit_one_cycle`, `lr_find`, ...) use its public interface: `added_cbs`,
    `recorder`, `moms` and `mock_fit`.
    """

    # Read by the bridge: this module runs the batch loop (after_pred, after_loss) itself.
    runs_chapter_batch_loop = True

    def __init__(
        self,
        model: nn.Module,
        loss_func: Callable[..., torch.Tensor],
        opt_func: Callable[..., torch.optim.Optimizer] = Adam,
        lr: float = 1e-3,
        splitter: Callable[[nn.Module], Sequence[Iterable[nn.Parameter]]] | None = None,
        cbs: Iterable[Callback] | None = None,
        metrics: Any = None,
        wd: float | None = None,
        wd_bn_bias: bool = False,
        train_bn: bool = True,
        moms: tuple[float, float, float] = (0.95, 0.85, 0.95),
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_func):
            raise TypeError(f"loss_func must be callable, got {type(loss_func).__name__}")
        if not callable(opt_func):
            raise TypeError(f"opt_func must be callable, got {type(opt_func).__name__}")
        if not (isinstance(lr, (int, float)) and lr >= 0):
            raise ValueError(f"lr must be a non-negative number, got {lr!r}")
        if wd is not None and not (isinstance(wd, (int, float)) and wd >= 0):
            raise ValueError(f"wd must be None or a non-negative number, got {wd!r}")
        if len(tuple(moms)) != 3:
            raise ValueError(f"moms must be three momentums (start, middle, end), got {moms!r}")
        self.model = model
        self.loss_func = loss_func
        self.opt_func = opt_func
        self.lr = lr
        self.splitter = splitter if splitter is not None else trainable_groups
        self.wd = wd
        self.wd_bn_bias = wd_bn_bias
        self.train_bn = train_bn
        self.moms = tuple(moms)
        self.metrics = nn.ModuleDict(_named_metrics(metrics))
        self._valid_loss = MeanMetric(nan_strategy="ignore")
        self.opt: torch.optim.Optimizer | None = None
        self.bridge = CallbackBridge()
        learn = self.bridge.learn
        learn.model, learn.loss_func, learn.opt_func = model, loss_func, opt_func
        learn.metrics = self.metrics
        learn.create_callbacks()  # the default callbacks meet the model now
        self.bridge.add_cbs(*(cbs or ()))

    # ------------------------------------------------------------------ public interface
    def added_cbs(self, *cbs: Callback | type) -> contextlib.AbstractContextManager:
        """Attach loop callbacks to this module's bridge for a `with` block (a fit)."""
        return self.bridge.added_cbs(*cbs)

    @property
    def recorder(self) -> Recorder | None:
        """The bridge's `Recorder` (the training history), or None when it has none."""
        return next((cb for cb in self.bridge.cbs if isinstance(cb, Recorder)), None)

    @contextlib.contextmanager
    def mock_fit(self) -> Iterator[None]:
        """For a throwaway fit (the learning-rate finder's mock training).

        The Recorder prints no table, and `opt` is the optimizer the module had before.
        """
        recorder, saved_opt = self.recorder, self.opt
        printing = recorder.print_table if recorder is not None else False
        if recorder is not None:
            recorder.print_table = False
        try:
            yield
        finally:
            self.opt = saved_opt
            if recorder is not None:
                recorder.print_table = printing

    # ------------------------------------------------------------------ Lightning wiring
    def configure_callbacks(self) -> list[pl.Callback]:
        return [self.bridge]

    def forward(self, *xb: Any) -> Any:
        return self.model(*xb)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = [list(g) for g in self.splitter(self.model)]
        if not groups or not all(groups):
            raise ValueError("splitter must return a non-empty list of non-empty parameter groups")
        no_wd = set() if self.wd_bn_bias else _bn_bias_params(self.model)
        kwargs: dict[str, Any] = {"lr": self.lr}
        takes_wd = _takes_wd(self.opt_func)
        if self.wd is not None:
            kwargs["wd" if takes_wd else "weight_decay"] = self.wd
        if takes_wd or self.wd is None:
            opt = self.opt_func([{"params": g} for g in groups], **kwargs)
        else:
            # A torch optimizer has no per-parameter flags: biases and norm weights get their own
            # groups with weight decay 0.
            opt = self.opt_func(_torch_groups(groups, no_wd), **kwargs)
        if isinstance(opt, AccelOptimizer):
            for p in no_wd:
                opt.state[p]["do_wd"] = False
            if self.train_bn:
                for p in _norm_params(self.model):
                    opt.state[p]["force_train"] = True
        self.opt = opt
        return opt

    # ------------------------------------------------------------------ the chapter's batch loop
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        bridge, learn = self.bridge, self.bridge.learn
        if not bridge.is_live:
            xb, yb = split_batch(batch)
            return self.loss_func(self.model(*xb), *yb)
        if not bridge.batch_alive:
            return self._skipped_loss()
        learn.pred = self.model(*learn.xb)
        if not bridge.batch_event("after_pred"):
            return self._skipped_loss()
        # learn.loss_func, not self.loss_func: a callback may swap it (MixUp does).
        learn.loss = learn.loss_func(learn.pred, *learn.yb)
        if not bridge.batch_event("after_loss"):
            return self._skipped_loss()
        # No per-step `self.log` here: it costs more than the whole bridge, and the Recorder
        # already sends the smoothed loss to the loggers every `log_every_n_steps`.
        return learn.loss

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        if self.bridge.is_live and self.bridge.backward_cancelled:
            if self.trainer.world_size > 1 or grad_scaler(self.trainer) is not None:
                # DDP all-reduces gradients during backward: every rank must run one. A GradScaler
                # must find gradients to check for infs. Zero gradients serve both.
                self._zero_loss().backward()
            return
        super().backward(loss, *args, **kwargs)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.bridge.is_live:
            self.bridge.after_optimizer_step()

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        bridge, learn = self.bridge, self.bridge.learn
        if self.trainer.sanity_checking:
            # The sanity check emits no events, and the loss may need them (a callback may reshape
            # the prediction in after_pred, as RNNRegularizer does): check the forward pass only.
            self.model(*split_batch(batch)[0])
            return None
        if not bridge.is_live:  # called outside a fit or validation run: no events
            xb, yb = split_batch(batch)
            pred = self.model(*xb)
            loss = self.loss_func(pred, *yb)
        else:
            if not bridge.batch_alive:
                return None
            learn.pred = self.model(*learn.xb)
            if not bridge.batch_event("after_pred"):
                return None
            learn.loss = learn.loss_func(learn.pred, *learn.yb)
            if not bridge.batch_event("after_loss"):
                return None
            xb, yb, pred, loss = learn.xb, learn.yb, learn.pred, learn.loss
        self._valid_loss.update(loss.detach().float(), weight=_batch_size(xb))
        for metric in self.metrics.values():
            metric.update(pred, *yb)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._valid_loss.reset()
        for metric in self.metrics.values():
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        # Logged here rather than per batch: every rank gets here, also a rank whose validation a
        # Cancel cut short, so the cross-rank reduction inside `compute()` always pairs up.
        with warnings.catch_warnings():
            # A cancelled validation may leave a metric without updates on this rank; it must
            # still take part in compute()'s cross-rank reduction, and nan is the right value.
            warnings.filterwarnings("ignore", message=r".*was called before the ``update``")
            self.log("valid_loss", self._valid_loss.compute())
            for name, metric in self.metrics.items():
                self.log(name, metric.compute())

    def _skipped_loss(self) -> torch.Tensor | None:
        # Returning None makes Lightning skip backward and step, but Lightning forbids it under
        # DDP, where a zero loss keeps every rank's backward (and gradient all-reduce) paired.
        return self._zero_loss() if self.trainer.world_size > 1 else None

    def _zero_loss(self) -> torch.Tensor:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.stack([(p * 0).sum() for p in params]).sum()


def _batch_size(xb: tuple) -> int:
    x = xb[0] if xb else None
    return int(x.shape[0]) if isinstance(x, torch.Tensor) and x.ndim > 0 else 1


def _named_metrics(metrics: Any) -> dict[str, nn.Module]:
    if metrics is None:
        return {}
    if isinstance(metrics, dict):
        items = list(metrics.items())
    else:
        if isinstance(metrics, nn.Module):
            metrics = [metrics]
        items = [(snake_name(type(m).__name__), m) for m in metrics]
    named: dict[str, nn.Module] = {}
    for name, metric in items:
        if not isinstance(metric, nn.Module) or not hasattr(metric, "compute"):
            raise TypeError(
                f"metrics must be torchmetrics Metric objects, got {type(metric).__name__}"
            )
        base, k = name, 1
        while name in named:
            k += 1
            name = f"{base}_{k}"
        named[name] = metric
    return named


def _norm_params(model: nn.Module) -> set[nn.Parameter]:
    return {p for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(False)}


def _bn_bias_params(model: nn.Module) -> set[nn.Parameter]:
    """Biases and normalization parameters: no weight decay for them unless `wd_bn_bias`."""
    params = _norm_params(model)
    for m in model.modules():
        bias = getattr(m, "bias", None)
        if isinstance(bias, nn.Parameter):
            params.add(bias)
    return params


def _torch_groups(groups: list[list[nn.Parameter]], no_wd: set) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for group in groups:
        decay = [p for p in group if p not in no_wd]
        plain = [p for p in group if p in no_wd]
        if decay:
            out.append({"params": decay})
        if plain:
            out.append({"params": plain, "weight_decay": 0.0})
    return out


def _takes_wd(opt_func: Callable) -> bool:
    """Whether `opt_func` names weight decay `wd` (the AccelOptimizer recipes) or not (torch)."""
    if isinstance(opt_func, type) and issubclass(opt_func, AccelOptimizer):
        return True
    try:
        return "wd" in inspect.signature(opt_func).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
