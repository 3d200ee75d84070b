"""Schedules under real DDP (2 CPU processes, gloo), and pickling for spawned workers."""

import json
import pickle

import pytest

from lightning_accel.train.callbacks import OneCycleSchedule
from lightning_accel.train.fit import fit_one_cycle
from lightning_accel.train.schedules import ParamScheduler, SchedCos

from ._tiny import StepProbe, TinyModule, loader, one_cycle


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


def test_fit_one_cycle_under_ddp(tmp_path):
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
        callbacks=[FileProbe(tmp_path)],
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
