"""DigitsDataModule: scikit-learn's digits, upscaled, split once and for all."""

import lightning.pytorch as pl
import pytest
import torch
from sklearn.datasets import load_digits

from lightning_accel.vision.digits import DigitsDataModule


@pytest.fixture(scope="module")
def digits():
    dm = DigitsDataModule(size=16, batch_size=32)
    dm.setup()
    return dm


def test_split_is_fixed_stratified_and_complete(digits):
    train_y, val_y = digits.train_set.tensors[1], digits.val_set.tensors[1]
    assert (len(train_y), len(val_y)) == (1437, 360)
    assert torch.bincount(val_y, minlength=10).min() >= 34  # every class in validation
    again = DigitsDataModule(size=16)
    again.setup()
    assert torch.equal(again.val_set.tensors[0], digits.val_set.tensors[0])


def test_images_are_the_upscaled_digits_normalized_with_training_statistics(digits):
    images = digits.train_set.tensors[0]
    assert images.shape == (1437, 1, 16, 16)
    assert abs(images.mean().item()) < 1e-4 and abs(images.std().item() - 1) < 1e-3
    # Undo the normalization, shrink back to 8x8 by averaging 2x2 blocks, compare with raw data.
    raw = torch.from_numpy(load_digits().images).float() / 16
    pixels = images * digits.std + digits.mean
    shrunk = torch.nn.functional.avg_pool2d(pixels, 2)[:, 0]
    # Find one training image in the raw set by its label and closeness.
    label = digits.train_set.tensors[1][0]
    candidates = raw[torch.from_numpy(load_digits().target) == label]
    assert (candidates - shrunk[0]).abs().flatten(1).amax(1).min() < 0.35


def test_batches_reach_the_model_as_three_channel_images(digits):
    x, y = next(iter(digits.train_dataloader()))
    out, labels = digits.on_after_batch_transfer((x, y), 0)
    assert out.shape == (32, 3, 16, 16) and out.is_contiguous()
    assert torch.equal(out[:, 0], out[:, 2]) and torch.equal(labels, y)
    dm = DigitsDataModule(size=16, channels_last=True)
    assert dm.on_after_batch_transfer((x, y), 0)[0].is_contiguous(memory_format=torch.channels_last)


def test_the_seed_fixes_the_training_order(digits):
    first = [y for _, y in digits.train_dataloader()]
    second = [y for _, y in digits.train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    other = DigitsDataModule(size=16, batch_size=32, seed=1)
    other.setup()
    assert not torch.equal(next(iter(other.train_dataloader()))[1], first[0])


@pytest.mark.parametrize(
    "kwargs, name", [({"size": 0}, "size"), ({"batch_size": -1}, "batch_size")]
)
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        DigitsDataModule(**kwargs)


def test_a_trainer_fits_on_it(tmp_path):
    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))

        def training_step(self, batch, _):
            x, y = batch
            assert x.shape[1:] == (3, 8, 8)
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Tiny(), datamodule=DigitsDataModule(size=8, batch_size=16))
    assert trainer.global_step == 3
