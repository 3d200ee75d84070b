"""A recipe and the 1cycle schedule configured through a real LightningCLI, from the YAML and the
commands that docs/optimizer.md shows (read from the doc, so the doc cannot drift)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.cli import LightningCLI  # needs jsonargparse[signatures], a dev dependency
from torch.utils.data import DataLoader, TensorDataset

from lightning_accel import Adam

from ..tiny import one_cycle

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "optimizer.md"
BATCHES = 8  # per epoch: TinyData has 64 samples in batches of 8


def _cli_section() -> str:
    text = DOC.read_text()
    start = text.index("### With LightningCLI")
    end = text.index("\n## ", start)
    return text[start:end]


def _block(lang: str) -> str:
    (block,) = re.findall(rf"```{lang}\n(.*?)```", _cli_section(), re.S)
    return block


def doc_config() -> str:
    return _block("yaml")


def doc_commands() -> list[list[str]]:
    """The doc's `python train.py ...` lines, as argument lists after `train.py`."""
    lines = [ln for ln in _block("bash").splitlines() if ln.strip()]
    assert all(ln.startswith("python train.py ") for ln in lines), lines
    return [shlex.split(ln)[2:] for ln in lines]


class MyModel(pl.LightningModule):
    """A linear regression that records the lr and mom each optimizer step used."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.net = torch.nn.Linear(width, 1)
        self.seen: list[tuple[float, float]] = []

    def training_step(self, batch, batch_idx):
        group = self.trainer.optimizers[0].param_groups[0]
        self.seen.append((group["lr"], group["mom"]))
        xb, yb = batch
        return ((self.net(xb) - yb) ** 2).mean()


class MyData(pl.LightningDataModule):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.width = width

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(8 * BATCHES, self.width, generator=gen)
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    # As from a script's command line: LightningCLI warns when pytest's own arguments are there.
    monkeypatch.setattr(sys, "argv", ["train.py"])


def _run_cli(args: list[str], tmp_path: Path, quiet: bool = True) -> LightningCLI:
    settings = [
        "--seed_everything=0",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.logger=false",
    ]
    args = args + settings if quiet else args
    return LightningCLI(MyModel, MyData, args=args, save_config_callback=None)


@pytest.mark.slow
def test_the_documented_yaml_trains_our_adam_on_the_1cycle_schedule(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(doc_config())
    settings = yaml.safe_load(doc_config())
    epochs = 1
    cli = _run_cli(
        [
            "fit",
            f"--config={config}",
            f"--trainer.max_epochs={epochs}",
            f"--trainer.limit_train_batches={BATCHES}",
        ],
        tmp_path,
    )
    (opt,) = cli.trainer.optimizers
    assert isinstance(opt, Adam)
    init = settings["optimizer"]["init_args"]
    (hypers,) = opt.hypers
    # Hyper-parameters the schedule leaves alone keep the YAML's values.
    for name in ("sqr_mom", "eps", "wd"):
        assert hypers[name] == float(init[name]), name

    (sched,) = settings["trainer"]["callbacks"]
    lr_max = float(sched["init_args"]["lr_max"])
    total = epochs * BATCHES
    assert len(cli.model.seen) == total
    for step, (lr, mom) in enumerate(cli.model.seen):
        pct = step / total
        want_lr, want_mom = one_cycle(pct, lr_max)
        assert lr == pytest.approx(want_lr, rel=1e-12)
        assert mom == pytest.approx(want_mom, rel=1e-12)
    # The weights moved: the optimizer really stepped with these values.
    assert opt.state[cli.model.net.weight]["step"] == total


@pytest.mark.slow
def test_the_optimizer_is_chosen_on_the_command_line(tmp_path):
    args = next(a for a in doc_commands() if "--optimizer.lr" in a)
    cli = _run_cli([*args, "--trainer.limit_train_batches=2"], tmp_path)
    (opt,) = cli.trainer.optimizers
    assert isinstance(opt, Adam)
    assert opt.hypers[0]["lr"] == 3e-3  # no schedule here: the value given on the command line
    assert opt.hypers[0]["mom"] == 0.9 and opt.hypers[0]["wd"] == 0.01  # the recipe's defaults


def test_optimizer_help_lists_the_recipes_arguments_with_defaults(tmp_path, capsys):
    args = next(a for a in doc_commands() if "--optimizer.help" in a)
    with pytest.raises(SystemExit) as exit_info:
        _run_cli(args, tmp_path, quiet=False)
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--optimizer.lr LR" in out and "(required, type: float)" in out
    for name, default in [
        ("mom", "0.9"),
        ("sqr_mom", "0.99"),
        ("eps", "1e-05"),
        ("wd", "0.01"),
        ("decouple_wd", "True"),
        ("impl", "auto"),
    ]:
        assert re.search(rf"--optimizer\.{name} .*?default: {re.escape(default)}\)", out), name


def test_a_bad_hyper_on_the_command_line_fails_with_its_name(tmp_path):
    with pytest.raises(ValueError, match=r"mom must be a finite number in \[0, 1\), got 1.5"):
        _run_cli(
            ["fit", "--optimizer=lightning_accel.Adam", "--optimizer.lr=0.1", "--optimizer.mom=1.5"]
            + ["--trainer.max_steps=1"],
            tmp_path,
        )


@pytest.mark.slow
def test_the_documented_script_and_config_run_as_written(tmp_path):
    """`python train.py fit --config config.yaml`, in a fresh process, exactly as the doc says."""
    (tmp_path / "my_project.py").write_text(
        "from tests.optim.test_lightning_cli import MyData, MyModel  # noqa: F401\n"
    )
    (tmp_path / "train.py").write_text(_block("py"))
    (tmp_path / "config.yaml").write_text(doc_config())
    args = next(a for a in doc_commands() if "--config" in a)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    result = subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = yaml.safe_load(doc_config())["trainer"]["max_epochs"]
    assert f"`Trainer.fit` stopped: `max_epochs={epochs}` reached" in result.stderr + result.stdout
