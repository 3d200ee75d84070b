"""`CallbackBridge`: runs the chapter's callbacks, events and Cancel exceptions inside Lightning.

The bridge is the only place that knows both vocabularies: it turns Lightning's hooks into the
chapter's events, keeps the `Learner` state the callbacks read, and turns each Cancel exception
into what Lightning can do (skip a step, end a loop early, stop the fit).
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
from ..loop.callback import Callback, check_event_names, name_origin, sort_callbacks
from ..loop.events import (
    INNER_EVENTS,
    CancelBackwardException,
    CancelBatchException,
    CancelEpochException,
    CancelException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
)
from ..loop.state import Learner

__all__ = ["CallbackBridge"]

# Loop-control flags (a bit each, so ranks can merge them with one all-reduce).
_VALID, _TRAIN, _EPOCH, _FIT = 1, 2, 4, 8
_FLAG_OF = {
    CancelValidException: _VALID,
    CancelTrainException: _TRAIN,
    CancelEpochException: _EPOCH,
    CancelFitException: _FIT,
}

# For each event, the parts of the loop it runs inside: a Cancel exception for a part is only
# caught there (the chapter's `try` blocks); raised anywhere else it is a programming error.
_CONTEXT: dict[str, frozenset[str]] = {
    "before_fit": frozenset({"fit"}),
    "before_epoch": frozenset({"fit", "epoch"}),
    "before_train": frozenset({"fit", "epoch", "train"}),
    "before_validate": frozenset({"fit", "epoch", "valid"}),
    "after_train": frozenset({"fit", "epoch"}),
    "after_validate": frozenset({"fit", "epoch"}),
    "after_cancel_train": frozenset({"fit", "epoch"}),
    "after_cancel_validate": frozenset({"fit", "epoch"}),
    "after_epoch": frozenset({"fit"}),
    "after_cancel_epoch": frozenset({"fit"}),
    "after_fit": frozenset(),
    "after_cancel_fit": frozenset(),
}
_CANCEL_PART = {
    CancelBatchException: "batch",
    CancelBackwardException: "backward",
    CancelStepException: "step",
    CancelTrainException: "train",
    CancelValidException: "valid",
    CancelEpochException: "epoch",
    CancelFitException: "fit",
}


class CallbackBridge(pl.Callback):
    """A Lightning callback that runs the chapter's callbacks (`Callback` subclasses).

    `bridge.learn` is the state they read. With an `AccelModule` every event fires with effect;
    with a plain `LightningModule` every event but `after_pred`/`after_loss` fires (see the docs
    for what a Cancel can and cannot undo there).
    """

    def __init__(self, *cbs: Callback, recorder: bool = True) -> None:
        super().__init__()
        self.learn = Learner(self)
        self._cbs: list[Callback] = []
        self._sorted: list[Callback] | None = None
        self._handlers: dict[str, list[Callback]] = {}
        self._created: set[int] = set()
        self._pending_state: dict | None = None
        self._reset_loop_state()
        defaults: list[Callback] = [TrainEvalCallback()]
        if recorder and not any(isinstance(cb, Recorder) for cb in cbs):
            defaults.append(Recorder())
        self.add_cbs(*defaults, *cbs)

    # ------------------------------------------------------------------ callback management
    @property
    def cbs(self) -> list[Callback]:
        """The callbacks in run order: run_before/run_after, then `order`, then insertion."""
        if self._sorted is None:
            self._sorted = sort_callbacks(self._cbs)
            self._handlers = {}
        return self._sorted

    def callback_named(self, name: str) -> Callback | None:
        """The attached callback whose `name` is `name`, if any."""
        for cb in self._cbs:
            if cb.name == name:
                return cb
        return None

    def add_cbs(self, *cbs: Callback | type) -> CallbackBridge:
        """Attach callbacks (instances, or classes to instantiate with no arguments).

        All are checked first (type, ordering constraints): on error nothing is attached.
        """
        new = [cb() if isinstance(cb, type) else cb for cb in cbs]
        for cb in new:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"cbs must be instances (or classes) of lightning_accel Callback, "
                    f"got {type(cb).__name__}; use Trainer(callbacks=...) for Lightning callbacks"
                )
        sort_callbacks([*self._cbs, *new])  # a cycle raises here, before anything changes
        for cb in new:
            check_event_names(cb)
            cb.learn = self.learn
            self._cbs.append(cb)
            self._sorted = None
            if self.learn.model is not None and id(cb) not in self._created:
                self._create(cb)
        return self

    def remove_cbs(self, *cbs: Callback | type) -> CallbackBridge:
        """Detach callbacks (instances, or every callback of a given class)."""
        for cb in cbs:
            if isinstance(cb, type):
                gone = [c for c in self._cbs if isinstance(c, cb)]
            else:
                gone = [c for c in self._cbs if c is cb]
            for c in gone:
                self._cbs.remove(c)
                self._created.discard(id(c))
                c.learn = None
        self._sorted = None
        return self

    @contextlib.contextmanager
    def added_cbs(self, *cbs: Callback | type) -> Iterator[CallbackBridge]:
        """Attach callbacks for the duration of a `with` block (a fit), then detach them."""
        new = [cb() if isinstance(cb, type) else cb for cb in cbs]
        self.add_cbs(*new)
        try:
            yield self
        finally:
            self.remove_cbs(*new)  # these instances only, not others of the same class

    def _create(self, cb: Callback) -> None:
        self._created.add(id(cb))
        cb("after_create")

    # ------------------------------------------------------------------ event dispatch
    def __call__(self, event_name: str) -> None:
        """Emit `event_name` to every callback, in order (Cancel exceptions propagate).

        Same semantics as calling each `Callback` (`run`, `run_train`/`run_valid`, errors named
        with class and event), inlined: this runs some fifty times per batch.
        """
        handlers = self._handlers.get(event_name) if self._sorted is not None else None
        if handlers is None:
            handlers = self._handlers_for(event_name)
        gated = event_name in INNER_EVENTS
        training = self.learn.training
        for cb, method in handlers:
            if method is None:  # a callback that overrides __call__ keeps its own dispatch
                cb(event_name)
                continue
            if not cb.run or (gated and not (cb.run_train if training else cb.run_valid)):
                continue
            try:
                method(cb)
            except CancelException:
                raise
            except Exception as exc:
                name_origin(exc, type(cb).__name__, event_name)
                raise
        if event_name == "after_fit":
            for cb in self.cbs:  # as in the reference: a callback switched off is on again
                cb.run = True

    def _handlers_for(self, event_name: str) -> list[tuple[Callback, Any]]:
        """The callbacks that define `event_name`, in run order, with the method to call."""
        handlers = []
        for cb in self.cbs:
            klass = type(cb)
            if klass.__call__ is not Callback.__call__:
                handlers.append((cb, None))
            elif getattr(klass, event_name, None) is not None:
                handlers.append((cb, getattr(klass, event_name)))
        self._handlers[event_name] = handlers
        return handlers

    def _emit(self, event_name: str) -> None:
        """Emit an event and turn a Cancel exception into the loop's response."""
        try:
            self(event_name)
        except CancelException as exc:
            self._handle_cancel(exc, event_name)

    def _context(self, event_name: str) -> frozenset[str]:
        if event_name in _CONTEXT:
            return _CONTEXT[event_name]
        phase = "train" if self.learn.training else "valid"
        outer = frozenset({"fit", "epoch", phase})
        if event_name in ("after_batch", "after_cancel_batch"):
            return outer
        if event_name == "before_backward":
            return outer | {"batch", "backward"}
        if event_name == "before_step":
            return outer | {"batch", "step"}
        return outer | {"batch"}  # before_batch ... after_step, after_cancel_backward/step

    def _handle_cancel(self, exc: CancelException, event_name: str) -> None:
        part = next(p for cls, p in _CANCEL_PART.items() if isinstance(exc, cls))
        if part not in self._context(event_name):
            raise RuntimeError(
                f"{type(exc).__name__} raised in `{event_name}`, outside the part it cancels; "
                f"it can be raised in before_{part if part != 'valid' else 'validate'} and in the "
                f"events inside that part (see docs/callbacks.md, 'Cancel exceptions')."
            ) from exc
        if part == "batch":
            self._kill_batch(after_batch=True)
            self._emit("after_cancel_batch")
        elif part == "backward":
            self._backward_cancelled = True
            self._emit("after_cancel_backward")
        elif part == "step":
            self._step_cancelled = True
            self._emit("after_cancel_step")
        else:
            self._close(_FLAG_OF[type(exc)], cancelled=True)

    def _kill_batch(self, after_batch: bool) -> None:
        """The rest of the batch emits nothing (but `after_batch` if asked); its step is skipped."""
        self._batch_alive = False
        self._after_batch_due = self._after_batch_due and after_batch
        self._skip_step = True

    def _close(self, flag: int, cancelled: bool) -> None:
        """End the part of the loop that `flag` names, emitting the chapter's closing events.

        `cancelled` is False when another rank raised the exception: this rank follows along
        without the `after_cancel_*` event.
        """
        if flag & self._closed:
            return
        self._pending |= flag
        if flag == _VALID:
            self._closed |= _VALID
            self._kill_batch(after_batch=False)
            if self._valid_open:
                self._valid_open = False
                if cancelled:
                    self._emit("after_cancel_validate")
                self._emit("after_validate")
        elif flag == _TRAIN:
            self._closed |= _TRAIN
            self._kill_batch(after_batch=False)
            if self._train_open:
                self._train_open = False
                if cancelled:
                    self._emit("after_cancel_train")
                self._emit("after_train")
        elif flag == _EPOCH:
            # The chapter skips after_train/after_validate of the parts an epoch cancel cuts.
            self._closed |= _EPOCH | _TRAIN | _VALID
            self._kill_batch(after_batch=False)
            self._train_open = self._valid_open = False
            if self._epoch_open:
                self._epoch_open = False
                if cancelled:
                    self._emit("after_cancel_epoch")
                self._emit("after_epoch")
        else:
            self._closed |= _FIT | _EPOCH | _TRAIN | _VALID
            self._kill_batch(after_batch=False)
            self._train_open = self._valid_open = self._epoch_open = False
            if self._fit_open:
                self._fit_open = False
                if cancelled:
                    self._emit("after_cancel_fit")
                self._finish_fit()
        if not self._distributed():
            self._steer_lightning()

    def _steer_lightning(self) -> None:
        """Make Lightning's loops follow the parts closed so far.

        Under DDP this runs only where every rank has agreed (same batch on every rank), so the
        ranks take the same path through Lightning's loops and their collectives stay paired.
        """
        trainer = self.learn.trainer
        if trainer is None:
            return
        closed = self._closed
        if closed & _FIT:
            trainer.should_stop = True
        if closed & _VALID:
            self._stop_eval = True
        epoch_loop = trainer.fit_loop.epoch_loop
        if closed & _TRAIN and self._in_train_batch:
            # The epoch loop ends after this batch; validation still runs unless cut below.
            epoch_loop.batch_progress.is_last_batch = True
            if closed & (_EPOCH | _FIT):
                epoch_loop._skip_next_val = True
            elif trainer.val_check_batch != float("inf"):
                # Lightning validates on batch counts, not on `is_last_batch`: make this batch
                # the validation batch (restored when validation starts or the epoch ends).
                per_epoch = trainer.check_val_every_n_epoch is not None
                done = (epoch_loop.batch_idx if per_epoch else epoch_loop.total_batch_idx) + 1
                if self._saved_val_check_batch is None:
                    self._saved_val_check_batch = trainer.val_check_batch
                trainer.val_check_batch = done

    def _restore_val_check(self) -> None:
        if self._saved_val_check_batch is not None:
            self.learn.trainer.val_check_batch = self._saved_val_check_batch
            self._saved_val_check_batch = None

    # ------------------------------------------------------------------ distributed agreement
    def _distributed(self) -> bool:
        trainer = self.learn.trainer
        return trainer is not None and trainer.world_size > 1

    def _agree(self) -> None:
        """Every rank adopts every part closed on any rank (one small all-reduce, DDP only)."""
        if not self._distributed():
            return
        trainer = self.learn.trainer
        bits = [_VALID, _TRAIN, _EPOCH, _FIT]
        flags = torch.tensor(
            [float(bool(self._pending & b)) for b in bits], device=trainer.strategy.root_device
        )
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        agreed = sum(b for b, f in zip(bits, flags.tolist()) if f > 0)
        for flag in (_FIT, _EPOCH, _TRAIN, _VALID):
            if agreed & flag and not self._closed & flag:
                self._close(flag, cancelled=False)
        self._steer_lightning()

    def _agree_skip(self, skip: bool) -> bool:
        if not self._distributed():
            return skip
        return bool(self.learn.trainer.strategy.reduce_boolean_decision(skip, all=False))

    # ------------------------------------------------------------------ loop state
    def _reset_loop_state(self) -> None:
        self._active = False  # inside a fit run by this bridge
        self._sanity = False
        self._fit_open = self._epoch_open = self._train_open = self._valid_open = False
        self._batch_open = self._batch_alive = self._after_batch_due = False
        self._in_train_batch = False
        self._backward_cancelled = self._step_cancelled = self._skip_step = False
        self._step_emitted = self._backward_ran = False
        self._saved_grads: list | None = None
        self._stop_eval = False
        self._pending = self._closed = 0
        self._saved_val_check_batch: Any = None

    @property
    def batch_alive(self) -> bool:
        """Whether the current batch still runs (no Cancel has ended it); read by AccelModule."""
        return self._batch_open and self._batch_alive

    @property
    def backward_cancelled(self) -> bool:
        """Whether the current backward pass is cancelled; read by AccelModule."""
        return self._backward_cancelled or not self.batch_alive

    def _live(self, trainer: pl.Trainer) -> bool:
        # `_sanity` mirrors trainer.sanity_checking, kept by the sanity-check hooks: this runs in
        # every hook, and Lightning's property costs several calls each time.
        return self._active and not self._sanity

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sanity = True

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sanity = False

    @property
    def is_live(self) -> bool:
        """Whether events are being emitted now (inside a fit, outside the sanity check)."""
        trainer = self.learn.trainer
        return trainer is not None and self._live(trainer)

    # ------------------------------------------------------------------ Lightning hooks: fit
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        learn = self.learn
        learn.trainer, learn.pl_module = trainer, pl_module
        learn.model = pl_module.model if _is_accel(pl_module) else pl_module
        if learn.loss_func is None:
            learn.loss_func = getattr(pl_module, "loss_func", None)
        for cb in self.cbs:
            cb.learn = learn
            if id(cb) not in self._created:
                self._create(cb)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset_loop_state()
        self._sorted = None  # callbacks are sorted once per fit
        _ = self.cbs
        learn = self.learn
        learn.trainer, learn.pl_module = trainer, pl_module
        learn.n_epoch = _n_epochs(trainer)
        learn.epoch, learn.iter, learn.training = 0, 0, False
        learn.pred = learn.loss = None
        self._active = self._fit_open = True
        self._emit("before_fit")
        if self._pending_state is not None:
            # Restored after before_fit, so callbacks that reset themselves there keep the state.
            self._apply_state(self._pending_state)
            self._pending_state = None
        self._agree()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active:
            return
        self._close_epoch()  # e.g. max_steps reached mid-epoch
        if self._fit_open:
            self._fit_open = False
            self._finish_fit()
        self._active = False

    def _finish_fit(self) -> None:
        self._emit("after_fit")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        # A failed fit leaves nothing half-open: the next `trainer.fit` starts clean.
        if self.learn.trainer is not None:
            self._restore_val_check()
        self._reset_loop_state()
        for cb in self._cbs:
            cb.run = True

    # ------------------------------------------------------------------ Lightning hooks: epoch
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._live(trainer) or not self._fit_open:
            return
        learn = self.learn
        self._pending = self._closed = 0
        self._stop_eval = False
        learn.epoch = trainer.current_epoch
        learn.n_epoch = _n_epochs(trainer)
        self._epoch_open = True
        self._emit("before_epoch")
        if self._epoch_open:
            learn.dl = trainer.train_dataloader
            learn.n_iter = _n_batches(trainer.num_training_batches)
            learn.iter = 0
            self._train_open = True
            self._emit("before_train")
        self._agree()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._live(trainer):
            return
        self._restore_val_check()
        self._close_epoch()
        self._agree()

    def _close_epoch(self) -> None:
        if self._train_open:
            self._train_open = False
            self._emit("after_train")
        if self._epoch_open:
            self._epoch_open = False
            self._emit("after_epoch")

    # ------------------------------------------------------------------ Lightning hooks: batches
    def _start_batch(self, batch: Any, batch_idx: int) -> None:
        learn = self.learn
        self._batch_open = True
        self._batch_alive = self._after_batch_due = self._phase_open()
        self._backward_cancelled = self._step_cancelled = self._backward_ran = False
        self._skip_step = not self._batch_alive
        self._step_emitted = False
        learn.iter = batch_idx
        learn.pred = learn.loss = None
        learn.xb, learn.yb = split_batch(batch)
        if self._batch_alive:
            self._emit("before_batch")

    def _phase_open(self) -> bool:
        return self._train_open if self.learn.training else self._valid_open

    def _end_batch(self) -> None:
        if self._batch_open and self._after_batch_due:
            self._batch_alive = False
            self._after_batch_due = False
            self._emit("after_batch")
        self._batch_open = False
        self._agree()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._live(trainer):
            return
        self._in_train_batch = True
        self._steer_lightning()  # a phase closed between batches ends the epoch loop here
        self._start_batch(batch, batch_idx)

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        if not self._live(trainer):
            return
        self._backward_ran = True
        plain = not _is_accel(pl_module)
        if self.batch_alive:
            if plain:
                # A plain module has no after_loss: show the loss as the chapter defines it.
                self.learn.loss = loss.detach() * trainer.accumulate_grad_batches
            self._emit("before_backward")
        if plain and self.backward_cancelled and not self._distributed():
            # A plain module's backward cannot be stopped from a callback: keep the gradients as
            # they are now and put them back after it, so the cancelled backward has no effect.
            # (Under DDP the all-reduce has already mixed them into every rank's: not undoable.)
            self._saved_grads = [
                (p, None if p.grad is None else p.grad.clone())
                for p in pl_module.parameters()
                if p.requires_grad
            ]

    def _restore_grads(self) -> None:
        for p, grad in self._saved_grads or ():
            p.grad = grad
        self._saved_grads = None

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._live(trainer):
            return
        if self._saved_grads is not None:
            self._restore_grads()
        if self.batch_alive:
            self._emit("after_backward")

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self._live(trainer):
            return
        if self.batch_alive:
            self._step_emitted = True
            self._emit("before_step")
        skip = self._skip_step or self._step_cancelled or not self.batch_alive
        # With a GradScaler, Lightning calls no step at all after a skipped backward: a skip
        # requested then would wrongly cancel the next batch's step.
        step_follows = self._backward_ran or not has_grad_scaler(trainer)
        if self._agree_skip(skip) and step_follows:
            skip_optimizer_step(optimizer)

    def after_optimizer_step(self) -> None:
        """Emit `after_step`; AccelModule calls this right after the optimizer step."""
        if self._step_emitted and self.batch_alive:
            self._step_emitted = False
            self._emit("after_step")

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self._live(trainer):
            return
        self.after_optimizer_step()  # plain modules: the step has happened by now
        self._end_batch()
        self._in_train_batch = False

    # ------------------------------------------------------------------ Lightning hooks: validation
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._live(trainer):
            return
        self._restore_val_check()
        learn = self.learn
        if self._train_open and trainer.fit_loop.epoch_loop._is_training_done:
            self._train_open = False
            self._emit("after_train")
        # A fresh validation run: forget a previous run's CancelValid (val_check_interval < 1).
        if not self._closed & (_EPOCH | _FIT):
            self._closed &= ~_VALID
            self._pending &= ~_VALID
        self._stop_eval = False
        if not self._distributed():
            # Under DDP the ranks first agree, at the end of the first validation batch.
            self._steer_lightning()
        if not self._epoch_open:
            return
        learn.training = False  # TrainEvalCallback sets it too; the phase gate needs it now
        learn.dl = trainer.val_dataloaders
        learn.n_iter = _n_batches(trainer.num_val_batches)
        learn.iter = 0
        self._valid_open = True
        self._emit("before_validate")

    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._live(trainer):
            return
        if self._stop_eval:
            # Set only where every rank agrees (or there is one rank): end the evaluation loop.
            raise StopIteration
        self._start_batch(batch, batch_idx)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._live(trainer):
            return
        if not _is_accel(pl_module) and self.batch_alive:
            self.learn.loss = _loss_from_outputs(outputs)
        self._end_batch()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._live(trainer):
            return
        if self._valid_open:
            self._valid_open = False
            self._emit("after_validate")
        learn = self.learn
        learn.training = True
        if self._train_open:  # validation in the middle of the epoch (val_check_interval < 1)
            learn.dl = trainer.train_dataloader
            learn.n_iter = _n_batches(trainer.num_training_batches)
        # End-of-epoch validation is the epoch's last part: close the epoch now, so a checkpoint
        # saved at the end of validation holds the whole epoch (the Recorder's row included).
        if self._epoch_open and not self._train_open:
            self._epoch_open = False
            self._emit("after_epoch")

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        learn = self.learn
        cb_states = {
            cb.name: cb.state_dict()
            for cb in self._cbs
            if callable(getattr(cb, "state_dict", None))
        }
        return {
            "learn": {
                "train_iter": learn.train_iter,
                "pct_train": learn.pct_train,
                "epoch": learn.epoch,
            },
            "cbs": cb_states,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._active:
            self._apply_state(state_dict)
        else:
            self._pending_state = state_dict

    def _apply_state(self, state: dict[str, Any]) -> None:
        for key, value in state.get("learn", {}).items():
            setattr(self.learn, key, value)
        for name, cb_state in state.get("cbs", {}).items():
            cb = self.callback_named(name)
            if cb is not None and callable(getattr(cb, "load_state_dict", None)):
                cb.load_state_dict(cb_state)


def _is_accel(pl_module: Any) -> bool:
    return getattr(pl_module, "_runs_chapter_batch_loop", False)


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


def has_grad_scaler(trainer: pl.Trainer) -> bool:
    """Whether Lightning steps through a GradScaler (float16 mixed precision)."""
    return getattr(trainer.precision_plugin, "scaler", None) is not None


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
