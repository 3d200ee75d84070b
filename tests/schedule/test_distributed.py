"""Schedules under real DDP (2 CPU processes, gloo), and pickling for spawned workers."""

import json
import pickle

import lightning.pytorch as pl
import pytest

from lightning_accel.schedule.fit import fit_one_cycle
from lightning_accel.schedule.functions import SchedCos
from lightning_accel.schedule.lightning_callbacks import OneCycleSchedule
from lightning_accel.schedule.lr_finder import LRFinder
from lightning_accel.schedule.param_scheduler import ParamScheduler

from ..distributed import ReleaseProcessGroup
from ..tiny import one_cycle
from ._tiny import StepProbe, TinyModule, loader


class FileProbe(StepProbe):
    """A StepProbe that writes what each rank saw, since spawned workers do not share memory."""

    def __init__(self, out_dir):
        super().__init__()
        self.out_dir = out_dir

    def on_fit_end(self, trainer, pl_module):
        path = self.out_dir / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps({"lrs": self.lrs, "moms": self.moms}))


def test_scheduler_callbacks_pickle():
    sched = pickle.loads(pickle.dumps(ParamScheduler({"lr": SchedCos(1e-3, 1e-5)})))
    assert sched.scheds["lr"](1.0) == pytest.approx(1e-5)
    one_cycle_cb = pickle.loads(pickle.dumps(OneCycleSchedule(0.01, moms=(0.9, 0.8, 0.9))))
    assert one_cycle_cb._sched._factory.moms == (0.9, 0.8, 0.9)


def test_fit_one_cycle_under_ddp(tmp_path, ddp_port):
    # 8 batches of 4 split over 2 ranks: 4 steps per epoch on each, 8 over 2 epochs. Forked
    # workers start in well under a second; spawned ones would need the pickling tested above.
    fit_one_cycle(
        TinyModule(),
        2,
        0.01,
        train_dataloaders=loader(8),
        strategy="ddp_fork",
        accelerator="cpu",
        devices=2,
        callbacks=[FileProbe(tmp_path), ReleaseProcessGroup()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert seen[0] == seen[1]
    expected = [one_cycle(k / 8, 0.01) for k in range(8)]
    assert [lr for (lr,) in seen[0]["lrs"]] == [pytest.approx(lr, rel=1e-12) for lr, _ in expected]
    assert [m for (m,) in seen[0]["moms"]] == [pytest.approx(m, rel=1e-12) for _, m in expected]


class DumpFinder(pl.Callback):
    """Writes each rank's lr_find curve (the workers' memory is not shared)."""

    def __init__(self, finder, out_dir):
        self.finder, self.out_dir = finder, out_dir

    def on_fit_end(self, trainer, pl_module):
        path = self.out_dir / f"finder{trainer.global_rank}.json"
        path.write_text(json.dumps({"lrs": self.finder.lrs, "losses": self.finder.losses}))


def test_lr_finder_ranks_agree_under_ddp(tmp_path, ddp_port):
    # Each rank sees different batches; the loss is averaged over ranks, so the curves, and the
    # divergence stop, are the same on both.
    finder = LRFinder(1e-4, 100.0, num_it=40)
    trainer = pl.Trainer(
        strategy="ddp_fork",
        accelerator="cpu",
        devices=2,
        max_steps=40,
        callbacks=[finder, DumpFinder(finder, tmp_path), ReleaseProcessGroup()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(TinyModule(n_batches=80))
    seen = [json.loads((tmp_path / f"finder{r}.json").read_text()) for r in (0, 1)]
    assert seen[0] == seen[1]
    assert 5 < len(seen[0]["losses"]) < 40  # stopped on divergence, together
