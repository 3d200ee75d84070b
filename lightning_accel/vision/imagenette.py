"""Imagenette and Imagewoof (or any `train/`/`val/` class-folder dataset) as a LightningDataModule.

Workers decode each JPEG and resize it to `presize` (the cheap per-item step); the batch is sent to
the device as uint8 and everything else happens there on the whole batch, in
`on_after_batch_transfer`: the reference augmentation for training, a deterministic resize for
validation, then ImageNet normalization.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .augment import IMAGENET_MEAN, IMAGENET_STD, BatchAugment, center_resize, normalize
from .download import (
    IMAGENETTE_SOURCES,
    ArchiveSource,
    DatasetUnavailableError,
    default_cache_dir,
    fetch_dataset,
    is_image_folder,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VARIANTS = ("160", "320", "full")
DATASETS = ("imagenette", "imagewoof")


def default_num_workers() -> int:
    """Loader processes: the CPUs this process may use, capped at 8 (more rarely helps)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS and Windows
        cpus = os.cpu_count() or 1
    return max(0, min(8, cpus))


def class_folders(folder: Path) -> list[str]:
    """Sorted class-folder names; hidden folders (`.ipynb_checkpoints`, ...) are not classes."""
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def list_images(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(path, label) for every image under `folder/<class>/`, in a stable sorted order."""
    items = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                items.append((path, label))
    return items


class UnreadableImageError(DatasetUnavailableError):
    """A file with an image extension that PIL cannot read; the message names the file."""


def find_unreadable(items: list[tuple[Path, int]]) -> tuple[Path, str] | None:
    """The first file whose header PIL cannot identify as an image, with the reason, or None.

    Reads only each file's header (fast), so it finds text files, empty files and files of the
    wrong format, not a damaged image body: that is found when the image is decoded.
    """
    for path, _ in items:
        try:
            with Image.open(path):
                pass
        except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
            return path, str(exc)
    return None


def _ignore_sigint(worker_id: int) -> None:
    # Ctrl-C reaches every process of the terminal's group; the main process decides what to do
    # (stop after the batch, for `compare`) and shuts the workers down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class PresizedImages(Dataset):
    """Images decoded to RGB, resized so the short side is `presize`, cropped square: uint8 CHW.

    The crop is at a random position for training and centred otherwise, as the reference's
    `Resize` does.
    """

    def __init__(self, items: list[tuple[Path, int]], presize: int, random_crop: bool) -> None:
        self.items, self.presize, self.random_crop = items, presize, random_crop

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.items[index]
        try:
            return self._load(path), label
        except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
            raise UnreadableImageError(f"cannot read image {path}: {exc}") from exc

    def _load(self, path: Path) -> Tensor:
        with Image.open(path) as img:
            # JPEG draft mode decodes at a reduced scale directly: much faster for large images.
            img.draft("RGB", (self.presize, self.presize))
            img = img.convert("RGB")
            w, h = img.size
            scale = self.presize / min(w, h)
            new_w, new_h = max(self.presize, round(w * scale)), max(self.presize, round(h * scale))
            img = img.resize((new_w, new_h), Image.BILINEAR)
            left, top = self._offset(new_w), self._offset(new_h)
            img = img.crop((left, top, left + self.presize, top + self.presize))
            array = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1)

    def _offset(self, length: int) -> int:
        spare = length - self.presize
        if spare <= 0:
            return 0
        if self.random_crop:
            return int(torch.randint(0, spare + 1, ()).item())
        return spare // 2


class ImagenetteDataModule(pl.LightningDataModule):
    """The chapter's Imagenette data: `presize` per item, `size` crops augmented on the device.

    `variant` is "160", "320" or "full" and `dataset` "imagenette" or "imagewoof". The archive is
    downloaded on first use into `data_dir` (default: `$LIGHTNING_ACCEL_DATA` or the user cache);
    a `data_dir` that itself holds `train/` and `val/` class folders is used as is, whatever its
    name. `seed` fixes the shuffling order, so repeated fits see the same batches.
    """

    def __init__(
        self,
        variant: str = "160",
        presize: int = 160,
        size: int = 128,
        batch_size: int = 128,
        num_workers: int | None = None,
        data_dir: str | Path | None = None,
        dataset: str = "imagenette",
        seed: int = 0,
        augment: bool = True,
        channels_last: bool = False,
        source: ArchiveSource | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {dataset!r}")
        for name, value in (("presize", presize), ("size", size), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if size > presize:
            raise ValueError(f"size ({size}) must not exceed presize ({presize})")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 or None; got {num_workers}")
        self.variant, self.dataset, self.presize, self.size = variant, dataset, presize, size
        self.batch_size, self.seed, self.augment = batch_size, seed, augment
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else None
        self.source = source or IMAGENETTE_SOURCES[(dataset, variant)]
        self.channels_last, self.progress = channels_last, progress
        self.train_augment = BatchAugment(size)
        self.path: Path | None = None
        self.classes: list[str] = []
        self.train_items: list[tuple[Path, int]] = []
        self.val_items: list[tuple[Path, int]] = []

    @property
    def num_classes(self) -> int:
        """Number of class folders under `train/` (sets the data module up if needed)."""
        if not self.classes:
            self.setup()
        return len(self.classes)

    def locate(self) -> Path:
        """The dataset folder, downloading and extracting the archive if it is not there yet."""
        if self.data_dir is not None and is_image_folder(self.data_dir):
            return self.data_dir
        root = self.data_dir if self.data_dir is not None else default_cache_dir()
        return fetch_dataset(self.source, root, progress=self.progress)

    def prepare_data(self) -> None:
        self.locate()

    def setup(self, stage: str | None = None) -> None:
        if self.path is not None:
            return
        path = self.locate()
        classes = class_folders(path / "train")
        val_classes = set(class_folders(path / "val"))
        unknown = sorted(val_classes - set(classes))
        if unknown:
            raise DatasetUnavailableError(
                f"{path / 'val'} has class folders missing from train/: {', '.join(unknown)}"
            )
        train, val = list_images(path / "train", classes), list_images(path / "val", classes)
        if not train or not val:
            empty = "train" if not train else "val"
            raise DatasetUnavailableError(f"{path / empty} holds no images ({IMAGE_EXTENSIONS})")
        unreadable = find_unreadable(train + val)
        if unreadable is not None:
            raise UnreadableImageError(f"cannot read image {unreadable[0]}: {unreadable[1]}")
        self.path, self.classes, self.train_items, self.val_items = path, classes, train, val

    def _loader(self, items: list[tuple[Path, int]], train: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if train else None
        return DataLoader(
            PresizedImages(items, self.presize, random_crop=train and self.augment),
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and len(items) >= self.batch_size,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            generator=generator,
            worker_init_fn=_ignore_sigint if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_items, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_items, train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        return self.transform_batch(images, training), labels

    def transform_batch(self, images: Tensor, training: bool) -> Tensor:
        """uint8 (B, 3, presize, presize) on the device -> normalized float (B, 3, size, size)."""
        x = images.float().div_(255)
        x = self.train_augment(x) if training and self.augment else center_resize(x, self.size)
        x = normalize(x, IMAGENET_MEAN, IMAGENET_STD)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
