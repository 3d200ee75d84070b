"""`CallbackBridge`: Lightning's hooks in, the loop core's calls out.

Each hook says where Lightning's loop is (`Nesting.open("batch")`, `close("epoch")`) and keeps
the `Learner` state the callbacks read; the core (`lightning_accel.loop`) emits the chapter's
events and handles Cancel exceptions. What is left here is Lightning's side: making its loops
follow a cancelled part (`_steer`), skipping optimizer steps, keeping ranks agreed under DDP,
and checkpointing the callbacks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import torch

from ..callbacks.recorder import Recorder
from ..callbacks.train_eval import TrainEvalCallback
from ..loop.callback import Callback
from ..loop.nesting import Nesting
from ..loop.state import DataLoaders, Learner
from . import internals
from .agreement import AGREED_PARTS, agree_on_ended, agree_on_skip, is_distributed

__all__ = ["CallbackBridge", "split_batch", "skip_optimizer_step"]

STATE_VERSION = 2  # 1 (no "version" key): callbacks keyed by `name`; 2: by unique state key
_ENDS_TRAINING = frozenset({"train", "epoch"})
_ENDS_VALIDATION = frozenset({"validate", "epoch", "fit"})


class CallbackBridge(pl.Callback):
    """A Lightning callback that runs the chapter's callbacks (`Callback` subclasses).

    `bridge.learn` is the state they read. With an `AccelModule` every event fires with effect;
    with a plain `LightningModule` every event but `after_pred`/`after_loss` fires (see the docs
    for what a Cancel can and cannot undo there).
    """

    def __init__(self, *cbs: Callback, recorder: bool = True) -> None:
        super().__init__()
        self.learn = Learner()
        self._nest = Nesting(self.learn)
        self._pending_state: dict | None = None
        self._reset_loop_state()
        defaults: list[Callback] = [TrainEvalCallback()]
        if recorder and not any(isinstance(cb, Recorder) for cb in cbs):
            defaults.append(Recorder())
        self.add_cbs(*defaults, *cbs)

    # ------------------------------------------------------------------ callbacks (the learner's)
    @property
    def cbs(self) -> list[Callback]:
        """The callbacks in run order: run_before/run_after, then `order`, then insertion."""
        return self.learn.cbs

    def callback_named(self, name: str) -> Callback | None:
        """The attached callback whose `name` is `name`, if any."""
        return self.learn.callback_named(name)

    def add_cbs(self, *cbs: Callback | type) -> CallbackBridge:
        """Attach callbacks (instances, or classes to instantiate with no arguments).

        All are checked first (type, ordering constraints): on error nothing is attached.
        """
        self.learn.add_cbs(*cbs)
        return self

    def remove_cbs(self, *cbs: Callback | type) -> CallbackBridge:
        """Detach callbacks (instances, or every callback of a given class)."""
        self.learn.remove_cbs(*cbs)
        return self

    @contextlib.contextmanager
    def added_cbs(self, *cbs: Callback | type) -> Iterator[CallbackBridge]:
        """Attach callbacks for the duration of a `with` block (a fit), then detach them."""
        with self.learn.added_cbs(*cbs):
            yield self

    def __call__(self, event_name: str) -> None:
        """Emit `event_name` to every callback, in order (Cancel exceptions propagate)."""
        self.learn(event_name)

    # ------------------------------------------------------------------ for AccelModule
    @property
    def is_live(self) -> bool:
        """Whether events are being emitted now (a fit or a validation, not the sanity check)."""
        return (self._active or self._standalone) and not self._sanity

    @property
    def batch_alive(self) -> bool:
        """Whether the current batch still runs (no Cancel has ended it)."""
        return self._nest.is_live("batch")

    @property
    def backward_cancelled(self) -> bool:
        """Whether the current backward pass is cancelled (or its whole batch)."""
        if self._nest.is_open("backward"):
            return not self._nest.is_live("backward")
        return not self._nest.is_live("batch")

    def batch_event(self, event_name: str) -> bool:
        """Emit an event inside the current batch (`after_pred`, `after_loss`).

        Returns whether the batch still runs afterwards.
        """
        return self._nest.event(event_name)

    def after_optimizer_step(self) -> None:
        """Emit `after_step`; AccelModule calls this right after the optimizer step."""
        self._nest.close("step")

    # ------------------------------------------------------------------ loop state
    def _reset_loop_state(self) -> None:
        self._nest.reset()
        self._active = False  # inside a fit run by this bridge
        self._standalone = False  # inside a `trainer.validate` outside a fit
        self._sanity = False
        self._in_train_batch = False
        self._backward_ran = False
        self._saved_grads: list | None = None
        self._stop_eval = False
        self._val_schedule_moved = False
        self._saved_val_check: Any = None
        self._train_batches = 0  # training batches started in this epoch
        self._valid_batches = 0  # validation batches started in this validation run

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Tracked here rather than read from `trainer.sanity_checking` in every hook: cheaper.
        self._sanity = True

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sanity = False

    # ------------------------------------------------------------------ Lightning hooks: fit
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        learn = self.learn
        learn.trainer, learn.pl_module = trainer, pl_module
        learn.model = pl_module.model if _runs_batch_loop(pl_module) else pl_module
        if learn.loss_func is None:
            learn.loss_func = getattr(pl_module, "loss_func", None)
        learn.create_callbacks()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset_loop_state()
        learn = self.learn
        learn.sort_cbs()  # once per fit; warns about constraints that name nothing
        learn.trainer, learn.pl_module = trainer, pl_module
        learn.opt = trainer.optimizers[0] if trainer.optimizers else None
        # Lightning loads the loaders after before_fit: set again when each epoch opens.
        learn.dls = DataLoaders(trainer.train_dataloader, trainer.val_dataloaders)
        learn.n_epoch = _n_epochs(trainer)
        learn.epoch, learn.iter, learn.training = 0, 0, False
        learn.pred = learn.loss = None
        self._active = True
        self._nest.open("fit")
        self._apply_pending_state("fit")
        self._agree()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active:
            return
        self._restore_validation_schedule()
        if self._resuming_in_epoch():
            # Resumed from the fit's last batch: nothing left to run, but the epoch to close.
            self._open_epoch_parts(trainer, self._pending_state["learn"].get("epoch", 0))
            self._apply_pending_state("epoch")
        self._nest.close("fit")  # also what is still open, e.g. when max_steps ends an epoch
        self._active = False
        self._pending_state = None

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        # A failed fit leaves nothing half-open: the next `trainer.fit` starts clean.
        if self.learn.trainer is not None:
            self._restore_validation_schedule()
        self._reset_loop_state()
        for cb in self.learn.cbs:
            cb.run = True

    # ------------------------------------------------------------------ Lightning hooks: epoch
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active or self._sanity:
            return
        self._open_epoch(trainer)
        self._agree()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active or self._sanity:
            return
        self._restore_validation_schedule()
        if self._resuming_in_epoch():
            # Resumed from the last batch of an epoch: Lightning ends it without validating.
            self._open_epoch(trainer)
        self._nest.close("epoch")
        self._agree()

    def _open_epoch(self, trainer: pl.Trainer) -> None:
        """Open the epoch and its training part; on a resume, restore the checkpoint's state."""
        pending = self._pending_state if self._resuming_in_epoch() else None
        if pending is not None and pending["learn"].get("epoch", 0) < trainer.current_epoch:
            # Lightning moved past the checkpoint's epoch: close it, so its history is whole.
            self._open_epoch_parts(trainer, pending["learn"]["epoch"])
            self._apply_pending_state("epoch")
            self._nest.close("epoch")
        self._open_epoch_parts(trainer, trainer.current_epoch)
        self._apply_pending_state("epoch")

    def _open_epoch_parts(self, trainer: pl.Trainer, epoch: int) -> None:
        learn = self.learn
        self._nest.ended -= {"epoch", "train", "validate"}  # a cancelled fit stays cancelled
        self._stop_eval = False
        learn.epoch = epoch
        learn.n_epoch = _n_epochs(trainer)
        learn.dls = DataLoaders(trainer.train_dataloader, trainer.val_dataloaders)
        if self._nest.open("epoch"):
            learn.dl = trainer.train_dataloader
            learn.n_iter = _n_batches(trainer.num_training_batches)
            learn.iter = 0
        self._train_batches = 0
        self._nest.open("train")

    # ------------------------------------------------------------------ Lightning hooks: batches
    def _start_batch(self, batch: Any) -> None:
        # `iter` is counted here, not taken from Lightning's `batch_idx`: Lightning 2.4 passes
        # one less after a mid-epoch resume.
        learn = self.learn
        self._backward_ran = False
        if self._in_train_batch:
            learn.iter = self._train_batches
            self._train_batches += 1
        else:
            learn.iter = self._valid_batches
            self._valid_batches += 1
        learn.pred = learn.loss = None
        learn.xb, learn.yb = split_batch(batch)
        self._nest.open("batch")

    def _end_batch(self) -> None:
        self._nest.close("batch")
        self._agree()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._active or self._sanity:
            return
        if not self._nest.is_open("epoch"):
            # Resumed in the middle of an epoch: Lightning skips `on_train_epoch_start` then.
            self._open_epoch(trainer)
        self._in_train_batch = True
        self._steer()  # a part ended between batches ends Lightning's epoch loop here
        self._start_batch(batch)

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        if not self.is_live:
            return
        self._backward_ran = True
        # A plain module's previous step (manual optimization: several per batch) ends here.
        self._nest.close("step")
        plain = not _runs_batch_loop(pl_module)
        if plain and self._nest.is_live("batch"):
            # A plain module has no after_loss: show the loss as the chapter defines it.
            self.learn.loss = loss.detach() * trainer.accumulate_grad_batches
        self._nest.open("backward")
        if plain and self.backward_cancelled and not is_distributed(trainer):
            # A plain module's backward cannot be stopped from a callback: keep the gradients as
            # they are now and put them back after it, so the cancelled backward has no effect.
            # (Under DDP the all-reduce has already mixed them into every rank's: not undoable.)
            self._saved_grads = [
                (p, None if p.grad is None else p.grad.clone())
                for p in pl_module.parameters()
                if p.requires_grad
            ]

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.is_live:
            return
        if self._saved_grads is not None:
            for p, grad in self._saved_grads:
                p.grad = grad
            self._saved_grads = None
        self._nest.close("backward")

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self.is_live:
            return
        self._nest.close("step")  # the previous optimizer's step, under manual optimization
        skip = not self._nest.open("step")
        # With a GradScaler, Lightning calls no step at all after a skipped backward: a skip
        # requested then would wrongly cancel the next batch's step.
        step_follows = self._backward_ran or internals.grad_scaler(trainer) is None
        if agree_on_skip(trainer, skip) and step_follows:
            skip_optimizer_step(optimizer)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self._active or self._sanity:
            return
        self._nest.close("step")  # plain modules: the step has happened by now
        self._end_batch()
        self._in_train_batch = False

    # ------------------------------------------------------------------ Lightning hooks: validation
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._sanity:
            return
        learn = self.learn
        if not self._active:  # `trainer.validate` outside a fit
            self._reset_loop_state()
            self._standalone = True
            learn.trainer, learn.pl_module = trainer, pl_module
            learn.dls = DataLoaders(None, trainer.val_dataloaders)
            self._start_validation(trainer)
            return
        self._restore_validation_schedule()
        if self._resuming_in_epoch():
            self._open_epoch(trainer)
        nest = self._nest
        if nest.is_open("train") and (
            not nest.is_live("train") or internals.training_epoch_done(trainer)
        ):
            nest.close("train")
        # A fresh validation run: forget a previous run's CancelValid (val_check_interval < 1).
        if not nest.ended & {"epoch", "fit"}:
            nest.ended.discard("validate")
        self._stop_eval = False
        if not is_distributed(trainer):
            # Under DDP the ranks first agree, at the end of the first validation batch.
            self._steer()
        if nest.is_open("epoch"):
            self._start_validation(trainer)

    def _start_validation(self, trainer: pl.Trainer) -> None:
        learn = self.learn
        learn.training = False  # TrainEvalCallback sets it too; the phase gate needs it now
        learn.dl = trainer.val_dataloaders
        learn.n_iter = _n_batches(trainer.num_val_batches)
        learn.iter = 0
        self._valid_batches = 0
        self._nest.open("validate")

    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.is_live:
            return
        if self._stop_eval:
            # Set only where every rank agrees (or there is one rank).
            internals.end_evaluation_loop()
        self._start_batch(batch)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.is_live:
            return
        if not _runs_batch_loop(pl_module) and self._nest.is_live("batch"):
            self.learn.loss = _loss_from_outputs(outputs)
        self._end_batch()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.is_live:
            return
        nest, learn = self._nest, self.learn
        nest.close("validate")
        if self._standalone:
            self._standalone = False
            return
        learn.training = True
        if nest.is_open("train"):  # validation in the middle of the epoch (val_check_interval < 1)
            learn.dl = trainer.train_dataloader
            learn.n_iter = _n_batches(trainer.num_training_batches)
        else:
            # End-of-epoch validation is the epoch's last part: close the epoch now, so a
            # checkpoint saved at the end of validation holds the whole epoch (the Recorder's row).
            nest.close("epoch")

    # ------------------------------------------------------------------ steering Lightning
    def _steer(self) -> None:
        """Make Lightning's loops leave the parts ended so far.

        Under DDP this runs only where every rank has agreed (same batch on every rank), so the
        ranks take the same path through Lightning's loops and their collectives stay paired.
        """
        ended = self._nest.ended
        trainer = self.learn.trainer
        if not ended or trainer is None:
            return
        if ended & _ENDS_VALIDATION:
            self._stop_eval = True
        if "fit" in ended:
            # Lightning's own early stop: the epoch loop ends after this batch, loggers flush,
            # and a checkpoint written at this batch resumes in the middle of the epoch.
            trainer.should_stop = True
            if self._in_train_batch:
                internals.skip_next_validation(trainer)
        elif self._in_train_batch and ended & _ENDS_TRAINING:
            internals.end_epoch_after_this_batch(trainer)
            if "epoch" in ended:
                internals.skip_next_validation(trainer)
            elif not self._val_schedule_moved:
                # CancelTrain: validation still runs, after this batch.
                self._saved_val_check = internals.validate_after_this_batch(trainer)
                self._val_schedule_moved = True

    def _restore_validation_schedule(self) -> None:
        if self._val_schedule_moved:
            internals.restore_validation_schedule(self.learn.trainer, self._saved_val_check)
            self._val_schedule_moved = False
            self._saved_val_check = None

    def _agree(self) -> None:
        """Every rank ends every part ended on any rank (DDP), then Lightning is steered."""
        trainer = self.learn.trainer
        if not is_distributed(trainer):
            self._steer()
            return
        agreed = agree_on_ended(trainer, self._nest.ended)
        for part in reversed(AGREED_PARTS):  # outermost first
            if part in agreed and part not in self._nest.ended:
                self._nest.end(part)
        self._steer()

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            **self.learn.state_dict(),  # "learn" (counters) and "cbs" (by state key)
            "within": self._within(),
            "epoch_batches": self._train_batches,
        }

    def _within(self) -> str:
        """Where a checkpoint written now was written: "fit" between epochs; "epoch" inside one
        that has not ended (its `after_epoch` is still to come, also after a CancelFit, which
        skips it), so the state is restored once that epoch is open again."""
        nest = self._nest
        return "epoch" if nest.is_open("epoch") and "epoch" not in nest.ended else "fit"

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_state = state_dict
        if self._active:  # restored after the fit started (`restore_checkpoint_after_setup`)
            self._apply_pending_state("fit")

    def _resuming_in_epoch(self) -> bool:
        pending = self._pending_state
        return (
            pending is not None
            and pending.get("within") == "epoch"
            and self._nest.is_live("fit")
            and not self._nest.is_open("epoch")
        )

    def _apply_pending_state(self, opened: str) -> None:
        """Apply a checkpoint's state once the parts open when it was written are open again.

        Applied after their `before_*` events, so callbacks that reset themselves there keep it.
        """
        state = self._pending_state
        if state is None or state.get("within", "fit") != opened:
            return
        self._pending_state = None
        if opened == "epoch":
            self._train_batches = state.get("epoch_batches", 0)
        # Written before state keys (no "version"): one entry per callback `name`.
        self.learn.load_state_dict(state, by_name="version" not in state)


def _runs_batch_loop(pl_module: Any) -> bool:
    """Whether the module runs the chapter's batch loop itself (AccelModule does)."""
    return getattr(pl_module, "runs_chapter_batch_loop", False)


def _n_batches(n: Any) -> int:
    if isinstance(n, (list, tuple)):
        n = sum(_n_batches(v) for v in n)
    if n is None or (isinstance(n, float) and math.isinf(n)):
        return 0
    return int(n)


def _n_epochs(trainer: pl.Trainer) -> int:
    max_epochs = trainer.max_epochs
    if max_epochs is not None and max_epochs > 0:
        return max_epochs
    n_batches = _n_batches(getattr(trainer, "num_training_batches", 0))
    if trainer.max_steps and trainer.max_steps > 0 and n_batches:
        return max(1, math.ceil(trainer.max_steps * trainer.accumulate_grad_batches / n_batches))
    return 1


def _loss_from_outputs(outputs: Any) -> Any:
    if isinstance(outputs, torch.Tensor):
        return outputs.detach()
    if isinstance(outputs, dict):
        for key in ("loss", "val_loss", "valid_loss"):
            if isinstance(outputs.get(key), torch.Tensor):
                return outputs[key].detach()
    return None


def split_batch(batch: Any, n_inp: int = 1) -> tuple[tuple, tuple]:
    """Split a batch into the chapter's `(xb, yb)` tuples: the first `n_inp` items are inputs."""
    if isinstance(batch, (list, tuple)):
        items = tuple(batch)
        return items[:n_inp], items[n_inp:]
    return (batch,), ()


def skip_optimizer_step(optimizer: Any) -> None:
    """Make the optimizer's next `step()` change nothing.

    `AccelOptimizer.skip_next_step()` does it exactly. A torch optimizer falls back to dropping
    the gradients: its step then leaves every parameter and its state untouched (torch skips
    parameters without a gradient), but the gradients accumulated so far are gone.
    """
    skip = getattr(optimizer, "skip_next_step", None)
    if callable(skip):
        skip()
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None
