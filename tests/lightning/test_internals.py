"""Each Lightning internal the bridge relies on, checked against the installed Lightning.

Every function of `lightning_accel.lightning.internals` has a test here that runs it in a real
Trainer; when a Lightning release renames or changes what it touches, the test fails naming the
function to update. A scan checks that no other module of the package touches those internals.
"""

from __future__ import annotations

import re
from pathlib import Path

import lightning
import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.precision import MixedPrecision
from tensorboard.compat.proto.summary_pb2 import Summary

import lightning_accel
from lightning_accel.lightning import internals

from ..tiny import PlainModule, loaders, trainer

PACKAGE = Path(lightning_accel.__file__).parent


def require(obj, attr: str, function: str) -> None:
    """Fail naming the internals function when Lightning lacks what it relies on."""
    if not hasattr(obj, attr):
        pytest.fail(
            f"Lightning {lightning.__version__}: {type(obj).__name__} has no `{attr}`, which "
            f"lightning_accel.lightning.internals.{function} relies on; update that function"
        )


class Probe(pl.Callback):
    """Counts batches per phase; calls `action(trainer, phase, batch_idx)` at each batch start."""

    def __init__(self, action=lambda trainer, phase, i: None):
        self.action = action
        self.train, self.valid, self.validations = [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append((trainer.current_epoch, batch_idx))
        self.action(trainer, "train", batch_idx)

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.validations.append(internals.training_epoch_done(trainer))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.valid.append(batch_idx)
            self.action(trainer, "valid", batch_idx)


def _fit(tmp_path, probe, n_train=4, n_valid=2, **kwargs):
    fitter = trainer(tmp_path, max_epochs=1, callbacks=[probe], **kwargs)
    fitter.fit(PlainModule(), *loaders(n_train, n_valid))
    return fitter


def test_end_epoch_after_this_batch(tmp_path):
    fitter = trainer(tmp_path)
    require(fitter.fit_loop, "epoch_loop", "end_epoch_after_this_batch")
    require(fitter.fit_loop.epoch_loop, "batch_progress", "end_epoch_after_this_batch")
    require(
        fitter.fit_loop.epoch_loop.batch_progress, "is_last_batch", "end_epoch_after_this_batch"
    )

    def action(trainer, phase, i):
        if phase == "train" and i == 1:
            internals.end_epoch_after_this_batch(trainer)

    probe = Probe(action)
    _fit(tmp_path, probe)
    assert probe.train == [(0, 0), (0, 1)], "end_epoch_after_this_batch did not end the epoch"
    assert probe.valid == []  # validation was not due after batch 1 (see the next tests)


def test_skip_next_validation(tmp_path):
    supported = []

    def action(trainer, phase, i):
        if phase == "train" and i == 1:
            trainer.should_stop = True  # Lightning validates before an early stop...
            supported.append(internals.skip_next_validation(trainer))  # ...unless told not to

    probe = Probe(action)
    _fit(tmp_path, probe)
    assert probe.train == [(0, 0), (0, 1)]
    if supported[0]:
        assert probe.valid == [], "skip_next_validation did not skip the validation"
    else:  # Lightning before 2.5 has no such flag: the bridge ends that validation at once
        assert lightning.__version__ < "2.5", (
            f"Lightning {lightning.__version__} lost the flag skip_next_validation sets"
        )
        assert probe.valid == [0, 1]


def test_validate_after_this_batch_and_restore(tmp_path):
    saved = []

    def action(trainer, phase, i):
        if phase == "train" and i == 1:
            internals.end_epoch_after_this_batch(trainer)
            saved.append(internals.validate_after_this_batch(trainer))

    probe = Probe(action)
    fitter = _fit(tmp_path, probe, n_train=6, val_check_interval=3)
    require(fitter, "val_check_batch", "validate_after_this_batch")
    assert probe.train == [(0, 0), (0, 1)]
    assert probe.valid == [0, 1], "validate_after_this_batch did not move the validation"
    assert saved == [3]
    internals.restore_validation_schedule(fitter, saved[0])
    assert fitter.val_check_batch == 3
    internals.restore_validation_schedule(fitter, None)  # nothing to restore
    assert fitter.val_check_batch == 3


def test_training_epoch_done(tmp_path):
    probe = Probe()
    fitter = _fit(tmp_path, probe, val_check_interval=0.5)
    require(fitter.fit_loop.epoch_loop, "_is_training_done", "training_epoch_done")
    assert probe.validations == [False, True], "training_epoch_done misreads mid-epoch validation"


def test_end_evaluation_loop(tmp_path):
    def action(trainer, phase, i):
        if phase == "valid" and i == 1:
            internals.end_evaluation_loop()

    probe = Probe(action)
    fitter = _fit(tmp_path, probe, n_valid=4)
    assert probe.valid == [0, 1], "Lightning's evaluation loop no longer stops on StopIteration"
    assert fitter.state.status == "finished"
    probe.valid.clear()
    trainer(tmp_path, callbacks=[probe]).validate(PlainModule(), loaders(1, 4)[1], verbose=False)
    assert probe.valid == [0, 1]


def test_grad_scaler(tmp_path):
    scaler = torch.amp.GradScaler("cpu")
    plugin = MixedPrecision("16-mixed", "cpu", scaler)
    require(plugin, "scaler", "grad_scaler")
    assert internals.grad_scaler(trainer(tmp_path, plugins=[plugin])) is scaler
    assert internals.grad_scaler(trainer(tmp_path)) is None
    assert internals.grad_scaler(trainer(tmp_path, precision="bf16-mixed")) is None


def test_disable_default_hp_metric(tmp_path):
    logger = TensorBoardLogger(tmp_path, default_hp_metric=True)
    require(logger, "_default_hp_metric", "disable_default_hp_metric")
    internals.disable_default_hp_metric(logger)
    logger.log_hyperparams({"lr": 0.1})
    logger.finalize("success")
    assert logger._default_hp_metric is False
    # The logger wrote no placeholder hp_metric scalar.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert "hp_metric" not in events.Tags()["scalars"]


def test_tensorboard_file_writer(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    require(logger.experiment, "_get_file_writer", "tensorboard_file_writer")
    writer = internals.tensorboard_file_writer(logger)
    writer.add_summary(Summary(value=[Summary.Value(tag="probe", simple_value=2.5)]), 7)
    logger.finalize("success")
    # The summary landed in the logger's own (only) event file.
    files = list(Path(logger.log_dir).glob("events.out.tfevents.*"))
    assert len(files) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("probe")] == [(7, 2.5)]


# Names of Lightning's loop and logger internals; only internals.py may touch them.
_PRIVATE = re.compile(
    r"\.(?:is_last_batch|_skip_next_val|val_check_batch|_is_training_done|precision_plugin"
    r"|_default_hp_metric|_get_file_writer|fit_loop|epoch_loop|batch_progress)\b"
    r"|raise StopIteration"
    r"|\b(?:trainer|logger|strategy|lightning_module)\._[a-z]"
)


def test_no_module_but_internals_touches_lightnings_internals():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "lightning" / "internals.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _PRIVATE.search(line.split("#")[0]):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "Lightning internals outside lightning/internals.py:\n" + "\n".join(
        offenders
    )
