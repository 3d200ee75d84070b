"""scikit-learn's bundled handwritten digits as small RGB images: real data, no download."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

SPLIT_SEED = 42
VALID_FRACTION = 0.2


def load_digits_tensors(size: int) -> tuple[Tensor, Tensor]:
    """All 1,797 digits as (N, 1, size, size) floats in [0, 1] and their int64 labels."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div_(16).unsqueeze(1)  # 8x8, values 0..16
    if size != images.shape[-1]:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp_(0, 1), torch.from_numpy(digits.target).long()


def fixed_split(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Train and validation indices: a stratified 80/20 split that is the same on every machine."""
    from sklearn.model_selection import train_test_split

    indices = torch.arange(len(labels)).numpy()
    train, valid = train_test_split(
        indices, test_size=VALID_FRACTION, random_state=SPLIT_SEED, stratify=labels.numpy()
    )
    return torch.from_numpy(train), torch.from_numpy(valid)


class DigitsDataModule(pl.LightningDataModule):
    """The 8x8 digits upscaled to `size` pixels and repeated over 3 channels, 10 classes.

    The train/validation split is fixed (stratified, 1,437/360), the images are normalized with the
    training set's mean and standard deviation, and `seed` fixes the shuffling order. The data is a
    few megabytes held in memory; the channel repeat happens on the device, after transfer.
    """

    classes = [str(d) for d in range(10)]
    num_classes = 10

    def __init__(
        self,
        size: int = 32,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("size", size), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0; got {num_workers}")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.num_workers = num_workers
        self.channels_last = channels_last
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.mean = self.std = 0.0

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, labels = load_digits_tensors(self.size)
        train, valid = fixed_split(labels)
        self.mean = images[train].mean().item()
        self.std = images[train].std().item()
        images = (images - self.mean) / self.std
        self.train_set = TensorDataset(images[train], labels[train])
        self.val_set = TensorDataset(images[valid], labels[valid])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=len(self.train_set) >= self.batch_size,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        images = images.expand(-1, 3, -1, -1)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        else:
            images = images.contiguous()
        return images, labels
