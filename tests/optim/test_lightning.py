"""AccelOptimizer in real Lightning Trainers: closures, monitors, checkpoints, precision, DDP."""

import csv
import math
from functools import partial

import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from lightning_accel.optim import SGD, Adam, ranger

from .. import tiny
from ..distributed import ReleaseProcessGroup
from .helpers import Regression

N_SAMPLES, BATCH = 32, 4


def _data(batch_size=BATCH):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N_SAMPLES, 4, generator=gen)
    y = x @ torch.randn(4, 1, generator=gen) + 0.1 * torch.randn(N_SAMPLES, 1, generator=gen)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def _trainer(tmp_path, **kwargs):
    return tiny.trainer(tmp_path, **{"max_epochs": 1, **kwargs})


OURS = partial(Adam, lr=0.01, wd=0.01, impl="per_param")
TORCH = partial(torch.optim.AdamW, lr=0.01, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)


def _fit(tmp_path, opt_func, **kwargs):
    model = Regression(opt_func)
    _trainer(tmp_path, **kwargs).fit(model, _data())
    return model


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize(
    "settings",
    [
        dict(precision="32-true"),
        dict(precision="bf16-mixed"),
        dict(gradient_clip_val=0.05, accumulate_grad_batches=2),
    ],
    ids=["32-true", "bf16-mixed", "clip-accumulate"],
)
def test_trains_exactly_like_torch_adamw_under_lightning(tmp_path, settings):
    ours = _fit(tmp_path, OURS, **settings)
    theirs = _fit(tmp_path, TORCH, **settings)
    assert _same_weights(ours, theirs)
    assert not _same_weights(ours, Regression(OURS))  # it did train


def test_16_mixed_with_a_grad_scaler_on_cpu_skips_overflowing_steps_like_torch(tmp_path):
    # Lightning maps precision="16-mixed" to bf16 on CPU; a float16 plugin with a GradScaler runs
    # the real fp16 path. A high initial scale overflows the first steps, which must be skipped.
    def fit(opt_func):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
        plugin = MixedPrecision("16-mixed", "cpu", scaler)
        model = Regression(opt_func)
        trainer = _trainer(tmp_path, plugins=[plugin])
        trainer.fit(model, _data())
        return model, trainer.optimizers[0], scaler.get_scale()

    ours, opt, scale = fit(OURS)
    theirs, _, torch_scale = fit(TORCH)
    skipped = round(math.log2(2.0**16 / scale))  # each skipped step halves the scale
    assert 0 < skipped < N_SAMPLES // BATCH and scale == torch_scale
    assert {s["step"] for s in opt.state.values()} == {N_SAMPLES // BATCH - skipped}
    assert _same_weights(ours, theirs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="16-mixed needs a CUDA GPU")
def test_trains_like_torch_adamw_under_16_mixed_on_cuda(tmp_path):
    kwargs = dict(accelerator="cuda", precision="16-mixed")
    ours, theirs = _fit(tmp_path, OURS, **kwargs), _fit(tmp_path, TORCH, **kwargs)
    for x, y in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_grad_scaler_skips_steps_with_inf_gradients_and_takes_finite_ones():
    model, ref_model = nn.Linear(4, 1), nn.Linear(4, 1)
    ref_model.load_state_dict(model.state_dict())
    opt = Adam(model.parameters(), lr=0.1)
    ref = torch.optim.AdamW(ref_model.parameters(), lr=0.1, betas=(0.9, 0.99), eps=1e-5)
    x = torch.randn(8, 4)
    before = [p.detach().clone() for p in model.parameters()]

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    scaler.scale(model(x).sum() * float("inf")).backward()
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert not opt.state and scaler.get_scale() == 2.0**7  # skipped, and the scale backed off

    for m, o in [(model, opt), (ref_model, ref)]:
        o.zero_grad()
        s = torch.amp.GradScaler("cpu", init_scale=2.0**8)
        s.scale(m(x).pow(2).mean()).backward()
        s.step(o)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref_model.parameters()))
    assert not torch.equal(model.weight, before[0])


def test_skip_next_step_holds_when_grad_scaler_calls_step():
    model = nn.Linear(4, 1)
    opt = Adam(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(model(torch.randn(8, 4)).pow(2).mean()).backward()
    opt.skip_next_step()  # e.g. a callback raised CancelStepException
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert not opt.state


def _logged(tmp_path, opt_func, name):
    model = Regression(opt_func, one_cycle_steps=8)
    logger = CSVLogger(tmp_path, name=name)
    monitor = LearningRateMonitor(logging_interval="step", log_momentum=True)
    trainer = _trainer(
        tmp_path, logger=logger, callbacks=[monitor], log_every_n_steps=1, limit_train_batches=8
    )
    trainer.fit(model, _data())
    with open(f"{logger.log_dir}/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    columns = [k for k in rows[0] if k.startswith("lr-")]
    return {k.removeprefix("lr-"): [float(r[k]) for r in rows if r[k]] for k in columns}


def test_learning_rate_monitor_logs_our_momentum_like_torchs(tmp_path):
    ours = _logged(tmp_path, OURS, "ours")
    theirs = _logged(tmp_path, TORCH, "theirs")
    # The recipe is a class of its own, so the monitor names it as it names torch's.
    assert ours == {"Adam": theirs["AdamW"], "Adam-momentum": theirs["AdamW-momentum"]}
    assert len(set(ours["Adam-momentum"])) > 3  # it moved with the one-cycle schedule


@pytest.mark.parametrize("opt_func", [OURS, partial(ranger, lr=0.01)], ids=["adam", "ranger"])
def test_a_lightning_checkpoint_resumes_bit_exactly(tmp_path, opt_func):
    straight = Regression(opt_func)
    _trainer(tmp_path, max_epochs=2).fit(straight, _data())

    first = Regression(opt_func)
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(first, _data())
    trainer.save_checkpoint(tmp_path / "half.ckpt")

    resumed = Regression(opt_func)
    _trainer(tmp_path, max_epochs=2).fit(resumed, _data(), ckpt_path=tmp_path / "half.ckpt")
    assert _same_weights(resumed, straight)
    assert not _same_weights(resumed, first)


def _ranked_data(module):
    """This rank's share of the samples, in order: rank r gets r, r + 2, ... (no shuffle)."""
    loader = _data()
    sampler = DistributedSampler(
        loader.dataset,
        num_replicas=module.trainer.world_size,
        rank=module.global_rank,
        shuffle=False,
    )
    return DataLoader(loader.dataset, batch_size=BATCH, sampler=sampler)


class RankedRegression(Regression):
    def train_dataloader(self):
        return _ranked_data(self)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_equals_one_process_on_the_global_batch(tmp_path, ddp_port):
    # Step i of the two ranks together sees exactly the samples of batch i of size 2 * BATCH.
    single = Regression(OURS)
    _trainer(tmp_path).fit(single, _data(batch_size=2 * BATCH))
    ddp = RankedRegression(OURS)
    trainer = _trainer(
        tmp_path,
        strategy="ddp_spawn",
        devices=2,
        use_distributed_sampler=False,
        callbacks=[ReleaseProcessGroup()],
    )
    trainer.fit(ddp)
    # ddp_spawn hands rank 0's trained weights back to this process.
    for x, y in zip(ddp.parameters(), single.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)
    assert not _same_weights(single, Regression(OURS))


@pytest.mark.slow
@pytest.mark.parametrize(
    "before, after",
    [
        (TORCH, partial(Adam, lr=0.5)),
        (
            partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=1e-3),
            partial(SGD, lr=0.5, mom=0.5, decouple_wd=False),
        ),
    ],
    ids=["adamw-to-adam", "sgd-to-sgd"],
)
def test_a_project_switches_from_torch_optim_mid_training_and_keeps_its_moments(
    tmp_path, before, after
):
    """Train with torch.optim, checkpoint, resume with the recipe: Lightning hands torch's state
    to our load_state_dict, which translates it, and training goes on as torch's would."""
    straight = Regression(before)
    _trainer(tmp_path, max_epochs=2).fit(straight, _data())

    first = Regression(before)
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(first, _data())
    trainer.save_checkpoint(tmp_path / "torch.ckpt")

    switched = Regression(after)
    trainer = _trainer(tmp_path, max_epochs=2)
    trainer.fit(switched, _data(), ckpt_path=tmp_path / "torch.ckpt")
    assert isinstance(trainer.optimizers[0], after.func)
    for ours, theirs in zip(switched.parameters(), straight.parameters()):
        assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    assert not _same_weights(switched, first)
