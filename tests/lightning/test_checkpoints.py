"""The bridge's checkpoint entry: one key per callback instance, and older checkpoints still load.

Callbacks are keyed by Lightning's `state_key` convention (the class's qualified name, numbered
when several instances share it). Checkpoints written before that keyed them by `cb.name` and
had no version; they load into the callbacks of that name.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lightning_accel import AccelModule, Callback, CallbackBridge
from lightning_accel.optim.recipes import SGD

from ..tiny import PlainModule, loaders, trainer


class Tally(Callback):
    """Counts the training batches it sees, in steps of `by`; checkpointable."""

    def __init__(self, by: int):
        self.by, self.total = by, 0

    def after_batch(self):
        if self.training:
            self.total += self.by

    def state_dict(self):
        return {"total": self.total}

    def load_state_dict(self, state):
        self.total = state["total"]


def _fit(tmp_path, cbs, max_epochs, ckpt_path=None, callbacks=()):
    torch.manual_seed(0)
    module = AccelModule(nn.Linear(3, 1), nn.functional.mse_loss, SGD, lr=0.05, cbs=cbs)
    module.recorder.print_table = False
    fitter = trainer(
        tmp_path, max_epochs=max_epochs, callbacks=list(callbacks), enable_checkpointing=True
    )
    fitter.fit(module, *loaders(3, 1), ckpt_path=ckpt_path)
    return module


def test_two_instances_of_one_class_keep_separate_state(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    _fit(tmp_path, [Tally(1), Tally(10)], 1, callbacks=[ckpt])
    saved = torch.load(tmp_path / "ckpt" / "epoch=0.ckpt", weights_only=True)
    entry = saved["callbacks"]["CallbackBridge"]
    assert entry["version"] == 2
    assert entry["cbs"]["Tally"] == {"total": 3} and entry["cbs"]["Tally#2"] == {"total": 30}
    assert set(entry["cbs"]) == {"Recorder", "Tally", "Tally#2"}

    first, second = Tally(1), Tally(10)
    _fit(tmp_path, [first, second], 2, ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt")
    assert (first.total, second.total) == (6, 60)


def test_a_checkpoint_written_before_state_keys_still_loads(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    full = _fit(tmp_path / "full", [Tally(1)], 3, callbacks=[ckpt])
    path = tmp_path / "ckpt" / "epoch=1.ckpt"
    saved = torch.load(path, weights_only=True)
    new = saved["callbacks"]["CallbackBridge"]
    recorder = {k: v for k, v in new["cbs"]["Recorder"].items() if k != "epoch"}
    # What the previous version wrote: no version, callbacks keyed by `cb.name`, a Recorder
    # without the epoch-in-progress entry.
    saved["callbacks"]["CallbackBridge"] = {
        "learn": new["learn"],
        "cbs": {"recorder": recorder, "tally": {"total": new["cbs"]["Tally"]["total"]}},
    }
    old_path = tmp_path / "old.ckpt"
    torch.save(saved, old_path)

    tally = Tally(1)
    resumed = _fit(tmp_path / "resumed", [tally], 3, ckpt_path=old_path)
    assert tally.total == 9
    rec_a, rec_b = full.recorder, resumed.recorder
    assert (
        rec_b.losses == rec_a.losses and rec_b.values == rec_a.values and rec_b.iters == rec_a.iters
    )
    assert resumed.bridge.learn.train_iter == 9


def test_a_plain_modules_bridge_loads_a_dict_of_the_old_format_directly(tmp_path):
    bridge = CallbackBridge(Tally(2))
    bridge.load_state_dict(
        {
            "learn": {"train_iter": 4, "pct_train": 0.5, "epoch": 1},
            "cbs": {"tally": {"total": 8}, "no_such_callback": {"x": 1}},
        }
    )
    module = PlainModule()
    fitter = trainer(tmp_path, max_epochs=3, callbacks=[bridge])
    fitter.fit(module, *loaders(2, 0))
    assert bridge.learn.tally.total == 8 + 2 * 6  # restored, then three epochs of two batches
