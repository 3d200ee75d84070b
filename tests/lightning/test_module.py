"""AccelModule: the optimizer it builds, its metrics, its public interface, `trainer.validate`,
and its argument checks."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

from lightning_accel import AccelModule, Callback, CancelValidException, Recorder
from lightning_accel.optim.optimizer import AccelOptimizer
from lightning_accel.optim.recipes import SGD

from ..loop.reference import EventLog
from ..tiny import loaders
from ..tiny import trainer as make_trainer


def net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))


def body_head(model: nn.Sequential) -> list[list[nn.Parameter]]:
    return [list(model[:3].parameters()), list(model[3].parameters())]


def test_default_optimizer_is_the_accel_adam_with_the_module_lr():
    module = AccelModule(net(), nn.functional.mse_loss, lr=0.02)
    opt = module.configure_optimizers()
    assert isinstance(opt, AccelOptimizer) and opt is module.opt
    assert [h["lr"] for h in opt.hypers] == [0.02]
    assert "sqr_mom" in opt.hypers[0]  # Adam's hyper-parameters
    assert module.bridge.learn.opt_func is module.opt_func


def test_no_weight_decay_for_biases_and_norm_unless_wd_bn_bias():
    model = net()
    no_wd = {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[3].bias)}
    opt = AccelModule(model, nn.functional.mse_loss, wd=0.1).configure_optimizers()
    assert opt.hypers[0]["wd"] == 0.1
    for p in model.parameters():
        assert opt.state[p].get("do_wd", True) is (id(p) not in no_wd)
    opt = AccelModule(model, nn.functional.mse_loss, wd=0.1, wd_bn_bias=True).configure_optimizers()
    assert all(opt.state[p].get("do_wd", True) for p in model.parameters())


def test_train_bn_keeps_norm_layers_trainable_when_frozen():
    model = net()
    module = AccelModule(model, nn.functional.mse_loss, splitter=body_head)
    opt = module.configure_optimizers()
    assert len(opt.param_groups) == 2
    opt.freeze()
    assert not model[0].weight.requires_grad
    assert model[1].weight.requires_grad and model[1].bias.requires_grad
    assert model[3].weight.requires_grad
    model = net()
    opt = AccelModule(model, nn.functional.mse_loss, splitter=body_head, train_bn=False)
    opt = opt.configure_optimizers()
    opt.freeze()
    assert not model[1].weight.requires_grad


def test_a_partial_recipe_is_recognised_as_an_accel_optimizer():
    model = net()
    opt_func = functools.partial(SGD, mom=0.9)
    opt = AccelModule(model, nn.functional.mse_loss, opt_func=opt_func, wd=0.1)
    opt = opt.configure_optimizers()
    assert isinstance(opt, AccelOptimizer) and opt.hypers[0]["wd"] == 0.1
    assert opt.state[model[0].bias]["do_wd"] is False


def test_torch_optimizer_gets_zero_decay_groups_when_wd_is_given():
    model = net()
    opt = AccelModule(model, nn.functional.mse_loss, opt_func=torch.optim.AdamW, wd=0.1)
    opt = opt.configure_optimizers()
    decays = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays[id(model[0].weight)] == 0.1 and decays[id(model[3].weight)] == 0.1
    assert decays[id(model[0].bias)] == 0.0 and decays[id(model[1].weight)] == 0.0
    assert len(decays) == len(list(model.parameters()))


def test_metrics_are_computed_on_validation_and_logged(tmp_path):
    module = AccelModule(
        nn.Linear(3, 1), nn.functional.mse_loss, SGD, lr=0.05,
        metrics=[MeanAbsoluteError(), MeanSquaredError()],
    )  # fmt: skip
    train_dl, valid_dl = loaders(2, 3)
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, train_dl, valid_dl)
    with torch.no_grad():
        pred = torch.cat([module.model(x) for x, _ in valid_dl])
        y = torch.cat([y for _, y in valid_dl])
    got = trainer.callback_metrics
    assert float(got["mean_absolute_error"]) == pytest.approx(float((pred - y).abs().mean()))
    assert float(got["mean_squared_error"]) == pytest.approx(float(((pred - y) ** 2).mean()))
    assert float(got["valid_loss"]) == pytest.approx(float(((pred - y) ** 2).mean()), rel=1e-5)


def test_cbs_reach_the_bridge_and_after_create_fires_with_the_model():
    seen = []

    class Created(Callback):
        def after_create(self):
            seen.append(self.model)

    model = net()
    module = AccelModule(model, nn.functional.mse_loss, cbs=[Created()])
    assert seen == [model]
    assert module.configure_callbacks() == [module.bridge]
    assert module.bridge.learn.created in module.bridge.cbs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "not a module"}, "model must be a torch.nn.Module"),
        ({"loss_func": 3}, "loss_func must be callable"),
        ({"opt_func": None}, "opt_func must be callable"),
        ({"lr": -1.0}, "lr must be a non-negative number"),
        ({"wd": -0.1}, "wd must be None or a non-negative number"),
        ({"moms": (0.9, 0.8)}, "moms must be three momentums"),
        ({"metrics": [nn.Linear(1, 1)]}, "metrics must be torchmetrics Metric objects"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    args = {"model": net(), "loss_func": nn.functional.mse_loss, **kwargs}
    with pytest.raises((TypeError, ValueError), match=message):
        AccelModule(**args)


def test_empty_splitter_groups_are_refused():
    module = AccelModule(net(), nn.functional.mse_loss, splitter=lambda m: [[]])
    with pytest.raises(ValueError, match="splitter must return"):
        module.configure_optimizers()


def test_the_public_interface_the_fit_helpers_use(tmp_path, capsys):
    module = AccelModule(net(), nn.functional.mse_loss, SGD, lr=0.01)
    assert isinstance(module.recorder, Recorder) and module.recorder in module.bridge.cbs
    extra = EventLog()
    with module.added_cbs(extra):
        assert extra in module.bridge.cbs and extra.learn is module.bridge.learn
    assert extra not in module.bridge.cbs
    make_trainer(tmp_path, max_epochs=1).fit(module, *loaders(2, 1))
    assert "train_loss" in capsys.readouterr().out
    opt = module.opt
    with module.mock_fit():
        make_trainer(tmp_path, max_epochs=1).fit(module, *loaders(2, 1))
        assert module.opt is not opt  # the mock fit built its own optimizer
    assert module.opt is opt and module.recorder.print_table
    assert "train_loss" not in capsys.readouterr().out  # the mock fit printed no table
    no_recorder = AccelModule(net(), nn.functional.mse_loss)
    no_recorder.bridge.remove_cbs(Recorder)
    assert no_recorder.recorder is None


def test_validate_outside_a_fit_emits_the_validation_events(tmp_path):
    log = EventLog()
    module = AccelModule(nn.Linear(3, 1), nn.functional.mse_loss, SGD, lr=0.05, cbs=[log])
    _, valid_dl = loaders(1, 3)
    results = make_trainer(tmp_path).validate(module, valid_dl, verbose=False)
    batch = ["before_batch", "after_pred", "after_loss", "after_batch"]
    assert log.seq == ["before_validate", *batch * 3, "after_validate"]
    assert all(not s["training"] and s["n_iter"] == 3 for s in log.snapshots)
    assert [s["iter"] for s in log.snapshots if s["event"] == "before_batch"] == [0, 1, 2]
    with torch.no_grad():
        want = torch.cat([(module.model(x) - y) ** 2 for x, y in valid_dl]).mean()
    assert results[0]["valid_loss"] == pytest.approx(float(want), rel=1e-5)

    # A Cancel works there too, and a fit afterwards starts clean.
    log = EventLog(CancelValidException, "after_loss", 1)
    module.bridge.add_cbs(log)
    make_trainer(tmp_path).validate(module, valid_dl, verbose=False)
    assert log.seq == [
        "before_validate", *batch, "before_batch", "after_pred", "after_loss",
        "after_cancel_validate", "after_validate",
    ]  # fmt: skip
    module.bridge.remove_cbs(log)
    fit_log = EventLog()
    module.bridge.add_cbs(fit_log)
    make_trainer(tmp_path, max_epochs=1).fit(module, *loaders(1, 1))
    assert fit_log.seq[0] == "before_fit" and fit_log.seq[-1] == "after_fit"
