"""examples/fastai_callbacks_in_lightning.py: the chapter's callbacks in a plain Trainer."""

import math

import pytest
import torch

from .helpers import load_example

example = load_example("fastai_callbacks_in_lightning")


def test_without_incident_every_batch_steps_and_the_model_is_reset_per_phase(tmp_path, capsys):
    trainer, bridge, model = example.main(
        epochs=2, n_batches=6, root_dir=tmp_path, progress_bar=False
    )
    assert trainer.global_step == 12
    assert bridge.learn.skip_step_on_bad_gradients.skipped == 0
    # ModelResetter: before_train and before_validate, in each of the two epochs.
    assert model.resets == 4
    assert len(bridge.learn.recorder.losses) == 12
    assert "TerminateOnNaNCallback" not in capsys.readouterr().out
    # The last row's valid_loss is the final model's MSE on the validation streams, computed
    # here independently: hidden state reset before validation and carried across its batches.
    valid = example.SineStreams(6 // 4)
    model.hidden, losses = None, []
    with torch.no_grad():
        for i in range(len(valid)):
            x, y = valid[i]
            out, model.hidden = model.rnn(x, model.hidden)
            losses.append(torch.mean((model.out(out) - y) ** 2).item())
    rows = bridge.learn.recorder.values
    assert len(rows) == 2 and all(math.isfinite(row[1]) for row in rows)
    assert rows[-1][1] == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_a_nan_batch_skips_its_step_and_terminates_the_fit(tmp_path, capsys):
    trainer, bridge, model = example.main(
        epochs=2, n_batches=6, nan_at_batch=3, root_dir=tmp_path, progress_bar=False
    )
    # The stop is announced, in one line naming the epoch, the batch and the loss.
    lines = [line for line in capsys.readouterr().out.splitlines() if "TerminateOnNaN" in line]
    assert lines == [
        "TerminateOnNaNCallback: training loss is nan at epoch 0, batch 3; stopping the fit"
    ]
    # Batches 0, 1, 2 stepped; batch 3's NaN gradients never reached the weights (Lightning
    # still counts the cancelled step in global_step).
    assert trainer.global_step == 4
    assert bridge.learn.skip_step_on_bad_gradients.skipped == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # TerminateOnNaN ran before the Recorder: the NaN loss was never recorded.
    losses = bridge.learn.recorder.losses
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert model.resets == 1  # no validation and no second epoch after the cancelled fit


def test_callbacks_are_reachable_by_name_and_ordered():
    bridge = example.CallbackBridge(
        example.ModelResetter(), example.TerminateOnNaNCallback(), example.SkipStepOnBadGradients()
    )
    names = [cb.name for cb in bridge.cbs]
    assert names.index("terminate_on_nan") < names.index("recorder")
    assert bridge.learn.model_resetter is bridge.cbs[names.index("model_resetter")]
