"""Resuming a fit from a checkpoint written at any step trains exactly what was left.

An uninterrupted fit writes a checkpoint at every few optimizer steps; a fresh module resumed
from each checkpoint must end on exactly the uninterrupted fit's weights and optimizer state
(torchdata's `StatefulDataLoader` resumes the data where it stopped), with an optimizer step
count equal to `global_step`, the schedule continued at the right position, and the Recorder's
history whole. Checkpoints come from `every_n_train_steps`, `train_time_interval`, a run stopped
by `CancelFitException`, and a process killed with SIGKILL (its `last.ckpt`).
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning
import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from packaging.version import Version
from torchdata.stateful_dataloader import StatefulDataLoader

from lightning_accel import Callback, CallbackBridge, CancelFitException

from ..loop.reference import EventLog
from ..tiny import loaders, one_cycle, quiet
from .resume_fits import (
    LR,
    N_EPOCH,
    N_TRAIN,
    N_VALID,
    every_n_steps,
    learner_of,
    make_module,
    run,
)

ROOT = Path(__file__).resolve().parents[2]


def steps_of(ckpt: Path) -> int:
    return int(re.search(r"step=(\d+)", ckpt.name).group(1))


# Lightning before 2.5 resumes mid-epoch inexactly by itself, with or without this package
# (see docs/callbacks.md): it validates at the wrong batches of the resumed epoch, drops a batch
# under gradient accumulation and adds one with a plain loader. There, the bridge is checked
# against plain Lightning resuming from the same checkpoints.
EXACT_RESUME = Version(lightning.__version__) >= Version("2.5")
needs_exact_resume = pytest.mark.skipif(
    not EXACT_RESUME, reason=f"Lightning {lightning.__version__} mis-resumes mid-epoch itself"
)


def assert_same_fit(full, resumed, full_trainer, resumed_trainer):
    """Weights, optimizer state, step counts, learner counters and Recorder history agree.

    On Lightning before 2.5 the resumed epoch's validation loss is not compared (Lightning
    validates at the wrong batches there)."""
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    opt_a, opt_b = full_trainer.optimizers[0], resumed_trainer.optimizers[0]
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert state_a[key].keys() == state_b[key].keys()
        for name in state_a[key]:
            assert torch.equal(
                torch.as_tensor(state_a[key][name]), torch.as_tensor(state_b[key][name])
            )
    assert opt_a.state_dict()["param_groups"] == opt_b.state_dict()["param_groups"]
    # The optimizer counted as many steps as Lightning's global_step.
    steps = {int(torch.as_tensor(s["step"])) for s in state_b.values()}
    assert steps == {resumed_trainer.global_step} == {full_trainer.global_step}
    learn_a, learn_b = learner_of(full_trainer), learner_of(resumed_trainer)
    assert learn_b.train_iter == learn_a.train_iter == N_EPOCH * N_TRAIN
    assert learn_b.pct_train == pytest.approx(learn_a.pct_train)
    rec_a, rec_b = learn_a.recorder, learn_b.recorder
    assert rec_b.losses == rec_a.losses and len(rec_a.losses) == N_EPOCH * N_TRAIN
    assert rec_b.lrs == rec_a.lrs and rec_b.iters == rec_a.iters
    columns = slice(None) if EXACT_RESUME else slice(0, 1)  # all, or train_loss only
    flat_a = [v for row in rec_a.values for v in row[columns]]
    flat_b = [v for row in rec_b.values for v in row[columns]]
    assert flat_b == pytest.approx(flat_a, rel=1e-12, nan_ok=True)
    assert len(rec_a.values) == len(rec_b.values) == N_EPOCH
    assert rec_b.hps == rec_a.hps


COMBOS = [
    (kind, how, accumulate)
    for kind in ("accel", "plain")
    for how in ("one_cycle", "fit")
    for accumulate in (1, 2)
]


@pytest.mark.slow
@needs_exact_resume
@pytest.mark.parametrize(("kind", "how", "accumulate"), COMBOS)
def test_resuming_from_a_step_checkpoint_ends_on_the_uninterrupted_fit(
    tmp_path, kind, how, accumulate
):
    ckpts = tmp_path / "ckpt"
    full, full_trainer = run(
        kind, how, accumulate, tmp_path / "full", callbacks=[every_n_steps(ckpts, 2)]
    )
    per_epoch = -(-N_TRAIN // accumulate)  # optimizer steps per epoch
    assert full_trainer.global_step == N_EPOCH * per_epoch
    # Checkpoints in the middle of an epoch (Lightning 2.6 mishandles one written at an epoch's
    # last batch, with or without this package: see docs/callbacks.md).
    middle = [c for c in sorted(ckpts.glob("*.ckpt")) if steps_of(c) % per_epoch]
    assert middle
    for ckpt in middle:
        log = EventLog()
        resumed, resumed_trainer = run(
            kind, how, accumulate, tmp_path / ckpt.stem, cbs=[log], ckpt_path=ckpt
        )
        assert_same_fit(full, resumed, full_trainer, resumed_trainer)
        # Every remaining training batch ran, with its events.
        epoch, window = divmod(steps_of(ckpt), per_epoch)
        done_batches = epoch * N_TRAIN + window * accumulate
        train_batches = [s for s in log.snapshots if s["event"] == "before_batch" and s["training"]]
        assert len(train_batches) == N_EPOCH * N_TRAIN - done_batches
        assert log.seq[:3] == ["before_fit", "before_epoch", "before_train"]
        if how == "one_cycle":
            # The schedule continued at the right position (the published 1cycle formula).
            # Batch b of epoch e feeds optimizer step e * per_epoch + b // accumulate.
            total = full_trainer.global_step
            steps = [
                e * per_epoch + b // accumulate for e in range(N_EPOCH) for b in range(N_TRAIN)
            ]
            want = [one_cycle(k / total, LR)[0] for k in steps]
            assert learner_of(resumed_trainer).recorder.hps["lr"] == pytest.approx(want, rel=1e-9)


class CancelAt(Callback):
    """Stops the fit (CancelFitException) after the `at`-th training batch, once recorded."""

    order = 100  # after the Recorder: the batch is in the history

    def __init__(self, at: int):
        self.at = at

    def after_batch(self):
        if self.training and self.train_iter == self.at:
            raise CancelFitException


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["accel", "plain"])
def test_resuming_after_cancel_fit_trains_every_remaining_batch(tmp_path, kind):
    full, full_trainer = run(kind, "one_cycle", 1, tmp_path / "full")
    ckpts = tmp_path / "ckpt"
    _, stopped = run(
        kind,
        "one_cycle",
        1,
        tmp_path / "stopped",
        cbs=[CancelAt(7)],
        callbacks=[every_n_steps(ckpts, 1, save_last=True)],
    )
    assert stopped.global_step == 7 and stopped.state.status == "finished"
    last = ckpts / "last.ckpt"
    resumed, resumed_trainer = run(kind, "one_cycle", 1, tmp_path / "resumed", ckpt_path=last)
    assert_same_fit(full, resumed, full_trainer, resumed_trainer)


@pytest.mark.slow
def test_resuming_from_a_train_time_interval_checkpoint(tmp_path):
    # An interval shorter than any batch: Lightning's time-based save fires after every batch.
    ckpts = tmp_path / "ckpt"
    timed = ModelCheckpoint(
        dirpath=ckpts,
        filename="{step}",
        train_time_interval=datetime.timedelta(microseconds=1),
        save_top_k=-1,
    )
    full, full_trainer = run("accel", "one_cycle", 1, tmp_path / "full", callbacks=[timed])
    assert sorted(steps_of(c) for c in ckpts.glob("*.ckpt"))[:3] == [1, 2, 3]
    ckpt = ckpts / "step=3.ckpt"
    resumed, resumed_trainer = run("accel", "one_cycle", 1, tmp_path / "resumed", ckpt_path=ckpt)
    assert_same_fit(full, resumed, full_trainer, resumed_trainer)


@pytest.mark.slow
def test_resuming_a_process_killed_with_sigkill_from_its_last_checkpoint(tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "tests.lightning.resume_fits", str(out), "6"]
    log = tmp_path / "child.log"  # a file, not a pipe: a full pipe would block the child
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            # Generous: a loaded CI machine takes long to start a Python with torch. A hang
            # still fails here.
            deadline = time.monotonic() + 400
            while not (out / "waiting").exists():
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the child never reached step 6"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert torch.load(out / "ckpt" / "last.ckpt", weights_only=False)["global_step"] == 6
    full, full_trainer = run("accel", "one_cycle", 1, tmp_path / "full")
    last = out / "ckpt" / "last.ckpt"
    resumed, resumed_trainer = run("accel", "one_cycle", 1, tmp_path / "resumed", ckpt_path=last)
    assert_same_fit(full, resumed, full_trainer, resumed_trainer)


@pytest.mark.slow
@needs_exact_resume  # Lightning 2.4 trains one batch too many there, with or without the bridge
def test_with_a_plain_loader_lightning_restarts_the_epochs_data_but_the_counts_hold(tmp_path):
    """As documented: a plain DataLoader cannot resume mid-epoch, so Lightning (with a warning)
    draws the rest of the epoch from the loader's start; every count still holds."""

    class Inputs(Callback):
        def __init__(self):
            self.seen = []

        def before_batch(self):
            if self.training:
                self.seen.append((self.epoch, self.iter, self.x.clone()))

    ckpts = tmp_path / "ckpt"
    plain = torch.utils.data.DataLoader
    _, full_trainer = run(
        "accel",
        "one_cycle",
        1,
        tmp_path / "full",
        callbacks=[every_n_steps(ckpts, 3)],
        loader=plain,
    )
    inputs = Inputs()
    with pytest.warns(UserWarning, match=r"dataloader is\s+not resumable"):
        _, resumed_trainer = run(
            "accel", "one_cycle", 1, tmp_path / "resumed", cbs=[inputs],
            ckpt_path=ckpts / "step=3.ckpt", loader=plain,
        )  # fmt: skip
    assert resumed_trainer.global_step == full_trainer.global_step == N_EPOCH * N_TRAIN
    recorder = learner_of(resumed_trainer).recorder
    assert len(recorder.losses) == N_EPOCH * N_TRAIN and len(recorder.values) == N_EPOCH
    assert [(e, i) for e, i, _ in inputs.seen[:2]] == [(0, 3), (0, 4)]
    # ...but what it trains as the epoch's 4th and 5th batches are the loader's first two.
    batches = [x for x, _ in loaders(N_TRAIN, N_VALID)[0]]
    assert torch.equal(inputs.seen[0][2], batches[0]) and torch.equal(inputs.seen[1][2], batches[1])


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [1, 2])
def test_the_bridge_resumes_exactly_as_plain_lightning_does(tmp_path, accumulate):
    """From every checkpoint (an epoch's last batch too), a plain module with the bridge and one
    without end on the same weights and optimizer state after the same Lightning batches."""

    class Batches(pl.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.append((trainer.current_epoch, batch[0].sum().item()))

    ckpts = tmp_path / "ckpt"
    run("plain", "fit", accumulate, tmp_path / "full", callbacks=[every_n_steps(ckpts, 2)])
    for ckpt in sorted(ckpts.glob("*.ckpt")):
        fits = []
        for bridged in (True, False):
            module = make_module("plain")
            batches = Batches()
            callbacks = [batches, CallbackBridge(CancelAt(-1))] if bridged else [batches]
            fitter = pl.Trainer(
                **quiet(
                    tmp_path / f"{ckpt.stem}-{bridged}",
                    max_epochs=N_EPOCH,
                    callbacks=callbacks,
                    accumulate_grad_batches=accumulate,
                )
            )
            fitter.fit(
                module, *loaders(N_TRAIN, N_VALID, loader=StatefulDataLoader), ckpt_path=ckpt
            )
            state = fitter.optimizers[0].state_dict()["state"]
            fits.append((list(module.parameters()), state, fitter.global_step, batches.seen))
        (weights_a, state_a, step_a, seen_a), (weights_b, state_b, step_b, seen_b) = fits
        assert (step_a, seen_a) == (step_b, seen_b), ckpt.name
        assert all(torch.equal(a, b) for a, b in zip(weights_a, weights_b)), ckpt.name
        for key, value in state_a.items():
            for name, tensor in value.items():
                assert torch.equal(torch.as_tensor(tensor), torch.as_tensor(state_b[key][name]))
