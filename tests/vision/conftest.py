"""Generated image folders in the Imagenette layout, and archives of them."""

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("n01440764", "n02102040", "n02979186")


def make_image_folder(root: Path, n_train: int = 4, n_val: int = 2, seed: int = 0) -> Path:
    """`root/train/<class>/*.JPEG` and `root/val/<class>/*.JPEG`, with varied sizes and modes.

    Each class has its own mean colour, so a model can learn them; one image per split is
    grayscale and one a PNG, as real folders mix them.
    """
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("val", n_val)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = int(rng.integers(40, 70)), int(rng.integers(40, 70))
                base = np.zeros((h, w, 3)) + 60 * label + 40
                pixels = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
                img = Image.fromarray(pixels)
                if i == 0:
                    img.convert("L").save(folder / f"{name}_{i}.JPEG")
                elif i == 1:
                    img.save(folder / f"{name}_{i}.png")
                else:
                    img.save(folder / f"{name}_{i}.JPEG", quality=90)
    return root


def make_archive(folder: Path, archive: Path, top: str) -> Path:
    """A gzipped tar holding `folder` under the top-level name `top`, like fast.ai's archives."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=top)
    return archive


def head_md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read(1 << 20)).hexdigest()


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images") / "imagenette-mini")


@pytest.fixture(scope="session")
def archive(tmp_path_factory, image_folder) -> Path:
    return make_archive(image_folder, tmp_path_factory.mktemp("server") / "mini.tgz", "mini")
