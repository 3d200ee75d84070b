"""Every use of a Lightning internal, one named function each.

Lightning's loops have no public way to end a training epoch after the current batch while still
validating, to skip one validation run, or to end an evaluation loop early; the bridge needs all
three to make Lightning follow a Cancel exception. Each function below says what it does in the
bridge's words and touches Lightning's private state (or relies on undocumented behaviour) in one
place. `tests/lightning/test_internals.py` checks each against the installed Lightning and fails
naming the function when a release has changed what it relies on.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

__all__ = [
    "end_epoch_after_this_batch",
    "skip_next_validation",
    "validate_after_this_batch",
    "restore_validation_schedule",
    "training_epoch_done",
    "end_evaluation_loop",
    "grad_scaler",
    "disable_default_hp_metric",
    "tensorboard_file_writer",
]


def _epoch_loop(trainer: pl.Trainer) -> Any:
    return trainer.fit_loop.epoch_loop


def end_epoch_after_this_batch(trainer: pl.Trainer) -> None:
    """Make Lightning's training epoch loop end after the current batch.

    Lightning marks the last batch of an epoch in its batch progress; marking the current one
    ends the loop after it. Validation runs after it only if due then (`val_check_batch`): see
    `validate_after_this_batch`.
    """
    _epoch_loop(trainer).batch_progress.is_last_batch = True


def skip_next_validation(trainer: pl.Trainer) -> bool:
    """Skip the validation Lightning would run after the current batch; False if it cannot.

    Lightning 2.5 and later have a flag for it; older ones have none, and the bridge then ends
    that validation run at its first batch instead (`end_evaluation_loop`).
    """
    loop = _epoch_loop(trainer)
    if not hasattr(loop, "_skip_next_val"):
        return False
    loop._skip_next_val = True
    return True


def validate_after_this_batch(trainer: pl.Trainer) -> Any:
    """Make Lightning validate after the current batch; returns what to restore afterwards.

    Lightning decides to validate from batch counts (`val_check_batch`), not from the last-batch
    mark: make the current batch count a validation batch. Pass the result to
    `restore_validation_schedule` when that validation starts or the epoch ends. Returns None
    when Lightning already validates after every last batch (iterable loaders).
    """
    if trainer.val_check_batch == float("inf"):
        return None
    loop = _epoch_loop(trainer)
    per_epoch = trainer.check_val_every_n_epoch is not None
    done = (loop.batch_idx if per_epoch else loop.total_batch_idx) + 1
    saved = trainer.val_check_batch
    trainer.val_check_batch = done
    return saved


def restore_validation_schedule(trainer: pl.Trainer, saved: Any) -> None:
    """Undo `validate_after_this_batch` (a None `saved` changes nothing)."""
    if saved is not None:
        trainer.val_check_batch = saved


def training_epoch_done(trainer: pl.Trainer) -> bool:
    """Whether the training part of the current epoch has run its last batch.

    True at the validation that ends an epoch, False at one in the middle of it
    (`val_check_interval < 1`). Lightning counts it from its batch progress and `max_steps`.
    """
    return bool(_epoch_loop(trainer)._is_training_done)


def end_evaluation_loop() -> None:
    """End Lightning's evaluation loop now; call it from `on_validation_batch_start`.

    Lightning's evaluation loop stops when its loader is exhausted, which it learns from a
    `StopIteration` it catches around the whole step (hooks included).
    """
    raise StopIteration


def grad_scaler(trainer: pl.Trainer) -> Any:
    """The `torch.amp.GradScaler` Lightning steps through (float16 mixed precision), or None."""
    return getattr(trainer.precision_plugin, "scaler", None)


def disable_default_hp_metric(logger: Any) -> None:
    """Stop a `TensorBoardLogger` writing its placeholder `hp_metric` (-1) HParams session.

    The logger writes it right after the first `log_hyperparams` unless built with
    `default_hp_metric=False`; a callback that writes its own session has to turn it off late.
    """
    if getattr(logger, "_default_hp_metric", False):
        logger._default_hp_metric = False


def tensorboard_file_writer(logger: Any) -> Any:
    """The event-file writer behind a `TensorBoardLogger` whose experiment is torch's
    `SummaryWriter` (its private `_get_file_writer`), or None for another writer (tensorboardX).

    Summaries added through it land in the logger's own event file: a second `SummaryWriter`
    would start a second file in the run's folder.
    """
    from torch.utils.tensorboard import SummaryWriter

    writer = logger.experiment
    return writer._get_file_writer() if isinstance(writer, SummaryWriter) else None
