"""ImagenetteDataModule on generated image folders in the Imagenette layout."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from lightning_accel.vision.augment import IMAGENET_MEAN, IMAGENET_STD
from lightning_accel.vision.download import ArchiveSource, DatasetUnavailableError
from lightning_accel.vision.imagenette import (
    ImagenetteDataModule,
    PresizedImages,
    UnreadableImageError,
)

from .conftest import CLASSES, head_md5, make_image_folder


def module(folder, **kwargs):
    kwargs = {"presize": 48, "size": 32, "batch_size": 4, "num_workers": 0, **kwargs}
    return ImagenetteDataModule(data_dir=folder, **kwargs)


def test_a_folder_in_the_layout_is_used_as_is(image_folder):
    dm = module(image_folder)
    dm.setup()
    assert dm.path == image_folder and dm.classes == list(CLASSES) and dm.num_classes == 3
    assert len(dm.train_items) == 12 and len(dm.val_items) == 6
    assert {label for _, label in dm.val_items} == {0, 1, 2}


def test_items_are_presized_square_rgb_uint8_centred_for_validation(image_folder):
    path = image_folder / "val" / CLASSES[1] / f"{CLASSES[1]}_1.png"  # a PNG, stored losslessly
    image, label = PresizedImages([(path, 1)], presize=20, random_crop=False)[0]
    assert image.shape == (3, 20, 20) and image.dtype == torch.uint8 and label == 1
    with Image.open(path) as img:
        w, h = img.size
        scale = 20 / min(w, h)
        new = (max(20, round(w * scale)), max(20, round(h * scale)))
        resized = np.asarray(img.convert("RGB").resize(new, Image.BILINEAR))
    top, left = (new[1] - 20) // 2, (new[0] - 20) // 2
    expected = torch.from_numpy(resized[top : top + 20, left : left + 20].copy()).permute(2, 0, 1)
    assert torch.equal(image, expected)


def test_grayscale_images_become_three_identical_channels(image_folder):
    path = image_folder / "train" / CLASSES[0] / f"{CLASSES[0]}_0.JPEG"
    image, _ = PresizedImages([(path, 0)], presize=16, random_crop=True)[0]
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_validation_batches_are_deterministic_and_normalized(image_folder):
    dm = module(image_folder)
    dm.setup()
    raw, labels = next(iter(dm.val_dataloader()))
    assert raw.shape == (4, 3, 48, 48) and raw.dtype == torch.uint8
    first = dm.transform_batch(raw, training=False)
    second = dm.transform_batch(raw, training=False)
    assert first.shape == (4, 3, 32, 32) and torch.equal(first, second)
    # Undoing the ImageNet normalization gives the antialiased resize of the presized images.
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = torch.nn.functional.interpolate(
        raw.float() / 255, size=(32, 32), mode="bilinear", antialias=True
    )
    torch.testing.assert_close(first * std + mean, expected, atol=1e-5, rtol=0)


def test_training_batches_are_augmented_to_the_crop_size(image_folder):
    dm = module(image_folder, channels_last=True)
    dm.setup()
    raw, _ = next(iter(dm.train_dataloader()))
    out = dm.transform_batch(raw, training=True)
    assert out.shape == (4, 3, 32, 32)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(out, dm.transform_batch(raw, training=True))


def test_the_seed_fixes_the_training_order(image_folder):
    def order(seed):
        dm = module(image_folder, seed=seed, augment=False)
        dm.setup()
        return torch.cat([y for _, y in dm.train_dataloader()])

    assert torch.equal(order(3), order(3))
    assert not torch.equal(order(3), order(4))


def test_a_missing_dataset_is_downloaded_into_data_dir(tmp_path, archive):
    source = ArchiveSource("mini", archive.as_uri(), archive.stat().st_size, head_md5(archive))
    dm = module(tmp_path / "cache", source=source, progress=False)
    dm.prepare_data()
    dm.setup()
    assert dm.path == tmp_path / "cache" / "mini" and dm.classes == list(CLASSES)


def test_the_environment_variable_moves_the_cache(tmp_path, archive, monkeypatch):
    monkeypatch.setenv("LIGHTNING_ACCEL_DATA", str(tmp_path / "env-cache"))
    source = ArchiveSource("mini", archive.as_uri())
    dm = ImagenetteDataModule(presize=48, size=32, num_workers=0, source=source, progress=False)
    dm.prepare_data()
    assert (tmp_path / "env-cache" / "mini" / "train").is_dir()


def test_offline_without_data_stops_with_a_clear_message(tmp_path):
    source = ArchiveSource("imagenette2-160", "http://127.0.0.1:9/imagenette2-160.tgz")
    dm = module(tmp_path / "cache", source=source, progress=False)
    with pytest.raises(DatasetUnavailableError, match="imagenette2-160.tgz"):
        dm.prepare_data()


def test_validation_classes_must_exist_in_training(tmp_path):
    folder = make_image_folder(tmp_path / "data", n_train=1, n_val=1)
    (folder / "val" / "extra").mkdir()
    (folder / "val" / CLASSES[0] / f"{CLASSES[0]}_0.JPEG").rename(
        folder / "val" / "extra" / "a.jpg"
    )
    with pytest.raises(DatasetUnavailableError, match="extra"):
        module(folder).setup()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"variant": "224"}, "variant must be one of 160, 320, full"),
        ({"dataset": "imagewang"}, "dataset must be one of imagenette, imagewoof"),
        ({"size": 64, "presize": 48}, r"size \(64\) must not exceed presize \(48\)"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"num_workers": -1}, "num_workers must be >= 0"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        module(tmp_path, **kwargs)


def test_default_workers_follow_the_machine(image_folder):
    dm = ImagenetteDataModule(data_dir=image_folder)
    assert 1 <= dm.num_workers <= 8


def test_a_trainer_sees_augmented_training_and_resized_validation_batches(tmp_path, image_folder):
    seen = {"train": set(), "val": set()}

    class Probe(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))

        def training_step(self, batch, _):
            seen["train"].add((tuple(batch[0].shape), batch[0].dtype))
            return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def validation_step(self, batch, _):
            seen["val"].add((tuple(batch[0].shape), batch[0].dtype))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Probe(), datamodule=module(image_folder))
    assert seen == {
        "train": {((4, 3, 32, 32), torch.float32)},
        "val": {((4, 3, 32, 32), torch.float32)},
    }


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augmentation_runs_on_the_device_the_batch_is_on(image_folder):
    dm = module(image_folder)
    dm.setup()
    raw, _ = next(iter(dm.train_dataloader()))
    out = dm.transform_batch(raw.cuda(), training=True)
    assert out.is_cuda and out.shape == (4, 3, 32, 32) and out.dtype == torch.float32


def test_hidden_folders_are_not_classes(tmp_path):
    folder = make_image_folder(tmp_path / "data", n_train=1, n_val=1)
    (folder / "train" / ".ipynb_checkpoints").mkdir()
    (folder / "val" / ".ipynb_checkpoints").mkdir()
    dm = module(folder)
    dm.setup()
    assert dm.classes == list(CLASSES)


def test_an_unreadable_image_is_named(tmp_path):
    bad = tmp_path / "broken.JPEG"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(UnreadableImageError, match="broken.JPEG"):
        PresizedImages([(bad, 0)], presize=16, random_crop=False)[0]


def test_setup_names_a_file_that_is_not_an_image(tmp_path):
    folder = make_image_folder(tmp_path / "data", n_train=1, n_val=1)
    bad = folder / "val" / CLASSES[1] / "notes.jpg"
    bad.write_text("text")
    (folder / "train" / CLASSES[0] / "README.txt").write_text("no image extension: ignored")
    with pytest.raises(UnreadableImageError, match=f"cannot read image {bad}: cannot identify"):
        module(folder).setup()


def test_a_damaged_image_body_is_named_when_a_worker_decodes_it(tmp_path):
    folder = make_image_folder(tmp_path / "data", n_train=1, n_val=1)
    good = next((folder / "val").rglob("*.JPEG"))
    good.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    dm = module(folder, num_workers=1)
    dm.setup()  # the header is sound
    # The worker's error comes back to this process with its class and the file's name.
    with pytest.raises(UnreadableImageError, match=f"cannot read image {good}: image file is"):
        list(dm.val_dataloader())


def test_worker_processes_load_the_same_validation_batches(image_folder):
    def first_val_batch(workers):
        dm = module(image_folder, num_workers=workers)
        dm.setup()
        return next(iter(dm.val_dataloader()))

    (x0, y0), (x1, y1) = first_val_batch(0), first_val_batch(1)
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
