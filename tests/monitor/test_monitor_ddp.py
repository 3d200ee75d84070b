"""Under DDP (2 CPU processes, gloo) only rank zero computes and writes, and what it writes is
the all-reduced gradient of the whole global batch."""

import copy
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DistributedSampler

from lightning_accel.monitor import OptimizerStatsMonitor

from ..distributed import ReleaseProcessGroup
from .helpers import TinyRegression, read_events, scalars, tiny_loader, trainer_kwargs


class MarkingMonitor(OptimizerStatsMonitor):
    """Leaves a file per snapshot it takes, so the parent process can see which ranks worked."""

    def __init__(self, marker_dir, **kwargs):
        super().__init__(**kwargs)
        self.marker_dir = str(marker_dir)

    def _before_step(self, trainer, optimizer):
        before = len(self._pending)
        super()._before_step(trainer, optimizer)
        if len(self._pending) > before:
            name = f"rank{trainer.global_rank}_step{trainer.global_step}"
            (Path(self.marker_dir) / name).touch()


@pytest.mark.slow
def test_ddp_logs_from_rank_zero_only(tmp_path, ddp_port):
    markers = tmp_path / "markers"
    markers.mkdir()
    module = TinyRegression()
    initial = copy.deepcopy(module)
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, max_steps=2, log_every_n_steps=1),
        devices=2,
        strategy="ddp_spawn",
        logger=TensorBoardLogger(
            tmp_path, name="ddp", version=0
        ),  # fixed: the parent cannot see the version rank 0 picks
        callbacks=[
            MarkingMonitor(markers, log_hparams=False, histogram_every_n_steps=0),
            ReleaseProcessGroup(),
        ],
    )
    trainer.fit(module, tiny_loader())

    assert sorted(p.name for p in markers.iterdir()) == ["rank0_step0", "rank0_step1"]
    event_files = list(Path(trainer.logger.log_dir).glob("events.out.tfevents.*"))
    assert len(event_files) == 1

    # The first step's gradient, all-reduced, is the mean of both ranks' batch gradients; Lightning
    # deals the samples with a shuffled DistributedSampler (seed 0) when training.
    dataset = tiny_loader().dataset
    x, y = dataset.tensors
    per_rank = []
    for rank in (0, 1):
        indices = list(DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True))[:4]
        replica = copy.deepcopy(initial)
        torch.nn.functional.mse_loss(replica(x[indices]), y[indices]).backward()
        per_rank.append([p.grad.double() for p in replica.body.parameters()])
    mean = [(a + b) / 2 for a, b in zip(*per_rank)]
    expected = math.sqrt(sum(float(g.pow(2).sum()) for g in mean))
    rank_zero_alone = math.sqrt(sum(float(g.pow(2).sum()) for g in per_rank[0]))
    logged = scalars(read_events(trainer.logger.log_dir), "grad_norm/body")
    assert sorted(logged) == [0, 1]
    assert logged[0] == pytest.approx(expected, rel=1e-5)
    assert logged[0] != pytest.approx(rank_zero_alone, rel=1e-3)
