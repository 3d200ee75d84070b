"""examples/existing_lightning_project.py: this package's Adam in an unchanged Lightning project."""

from pathlib import Path

import pytest
import torch

from lightning_accel.optim.optimizer import AccelOptimizer

from .helpers import load_example, scalars

EPOCHS, BATCHES = 2, 3


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    example = load_example("existing_lightning_project")
    root = tmp_path_factory.mktemp("existing")
    return example.main(epochs=EPOCHS, limit_batches=BATCHES, root_dir=root, progress_bar=False)


def test_the_optimizer_is_ours_and_training_ran(trainer):
    assert isinstance(trainer.optimizers[0], AccelOptimizer)
    assert trainer.global_step == EPOCHS * BATCHES
    assert torch.isfinite(trainer.callback_metrics["val_loss"])


def test_model_checkpoint_saved_a_loadable_checkpoint(trainer):
    path = Path(trainer.checkpoint_callback.best_model_path)
    assert path.is_file()
    checkpoint = torch.load(path, weights_only=False)
    # The optimizer's state went into the checkpoint in torch's format.
    state = checkpoint["optimizer_states"][0]
    assert {"state", "param_groups"} <= set(state)
    assert "grad_avg" in next(iter(state["state"].values()))


def test_learning_rate_monitor_sees_torch_one_cycle_on_our_optimizer(trainer):
    total = EPOCHS * BATCHES
    # The same schedule, replayed by torch on its own SGD.
    dummy = torch.optim.SGD([torch.zeros(1)], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(dummy, max_lr=3e-3, total_steps=total)
    expected = []
    for _ in range(total):
        expected.append((dummy.param_groups[0]["lr"], dummy.param_groups[0]["momentum"]))
        dummy.step()
        sched.step()
    lrs = scalars(trainer.logger.log_dir, "lr-Adam")
    moms = scalars(trainer.logger.log_dir, "lr-Adam-momentum")
    assert sorted(lrs) == list(range(total))
    for step in range(total):
        assert lrs[step] == pytest.approx(expected[step][0], rel=1e-6)
        assert moms[step] == pytest.approx(expected[step][1], rel=1e-6)
