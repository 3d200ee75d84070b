"""Download, check and atomically extract dataset archives into a local cache.

A dataset folder only ever appears under its final name once it is completely extracted: the
archive is downloaded to a `.part` file and extracted into a temporary folder, and each is renamed
into place only after it has been checked. A crash, a truncated download or a corrupt archive
therefore never leaves anything that a later run would mistake for a good dataset.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

CACHE_ENV_VAR = "LIGHTNING_ACCEL_DATA"
_CHUNK = 1 << 20


class DatasetUnavailableError(RuntimeError):
    """The dataset could not be found, downloaded or extracted; the message says how to fix it."""


@dataclass(frozen=True)
class ArchiveSource:
    """Where a dataset archive lives and how to recognise a complete, genuine copy of it.

    `size` is the archive's byte count and `head_md5` the MD5 of its first MiB: the figures fast.ai
    publishes for its datasets. The size catches truncation, the hash a wrong or replaced file, and
    gzip's own CRC (checked during extraction) corruption anywhere else.
    """

    name: str
    url: str
    size: int | None = None
    head_md5: str | None = None

    @property
    def archive_name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


_S3 = "https://s3.amazonaws.com/fast-ai-imageclas"

_PUBLISHED = {  # (dataset, variant): (archive stem, size in bytes, MD5 of the first MiB)
    ("imagenette", "full"): ("imagenette2", 1557161267, "2c774ecb40005b35d7937d50f5d42336"),
    ("imagenette", "320"): ("imagenette2-320", 341663724, "1f1f74f133caff120e575856659b87a2"),
    ("imagenette", "160"): ("imagenette2-160", 99003388, "c475f8f7617a200ba35b9facc48443c3"),
    ("imagewoof", "full"): ("imagewoof2", 1343715595, "2cc1c1e36e20cb6fd24ffb978edcb487"),
    ("imagewoof", "320"): ("imagewoof2-320", 328387740, "7a1fd92672a559a85de76e4810a20c21"),
    ("imagewoof", "160"): ("imagewoof2-160", 92612825, "3559b194123981a540b87132dbda412f"),
}
IMAGENETTE_SOURCES: dict[tuple[str, str], ArchiveSource] = {
    key: ArchiveSource(stem, f"{_S3}/{stem}.tgz", size, md5)
    for key, (stem, size, md5) in _PUBLISHED.items()
}


def default_cache_dir() -> Path:
    """The data cache: `$LIGHTNING_ACCEL_DATA`, else `$XDG_CACHE_HOME/lightning-accel`, else
    `~/.cache/lightning-accel`."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lightning-accel"


def is_image_folder(path: Path) -> bool:
    """True when `path` holds `train/` and `val/` folders, each with at least one class folder."""
    path = Path(path)
    return all(
        (path / split).is_dir()
        and any(c.is_dir() and not c.name.startswith(".") for c in (path / split).iterdir())
        for split in ("train", "val")
    )


def archive_problem(path: Path, source: ArchiveSource) -> str | None:
    """Why the archive at `path` is not the expected one, or None when its size and hash match."""
    size = path.stat().st_size
    if source.size is not None and size != source.size:
        kind = "truncated" if size < source.size else "larger than expected"
        return f"{path} is {kind}: {size} bytes, expected {source.size}"
    if source.head_md5 is not None:
        with open(path, "rb") as f:
            digest = hashlib.md5(f.read(_CHUNK)).hexdigest()
        if digest != source.head_md5:
            return f"{path} has MD5 {digest} over its first MiB, expected {source.head_md5}"
    return None


def fetch_dataset(source: ArchiveSource, root: Path | str, progress: bool = True) -> Path:
    """Return `root/<name>`, a complete extracted dataset, downloading and extracting if needed.

    An archive already in `root` (downloaded earlier, or put there by hand for offline use) is
    checked and used instead of downloading.
    """
    root = Path(root).expanduser()
    target = root / source.name
    if is_image_folder(target):
        return target
    if target.exists():
        raise DatasetUnavailableError(
            f"{target} exists but is not a dataset folder with train/ and val/ class folders; "
            "delete it and run again"
        )
    root.mkdir(parents=True, exist_ok=True)
    archive = root / source.archive_name
    if archive.exists():
        problem = archive_problem(archive, source)
        if problem:
            raise DatasetUnavailableError(
                f"{problem}. Delete it and run again to download a fresh copy from {source.url}"
            )
    else:
        _download(source, archive, progress)
    _extract(archive, target, source)
    return target


def _download(source: ArchiveSource, archive: Path, progress: bool) -> None:
    part = archive.with_name(archive.name + ".part")
    try:
        with urllib.request.urlopen(source.url, timeout=60) as response, open(part, "wb") as out:
            total = source.size or int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=f"Downloading {source.archive_name}",
                disable=not progress,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DatasetUnavailableError(
            f"could not download {source.name} from {source.url} ({reason}). Without network "
            f"access, download {source.archive_name} elsewhere and put it in {archive.parent}, "
            f"or extract it there so that {archive.parent / source.name}/train exists"
        ) from exc
    problem = archive_problem(part, source)
    if problem:
        part.unlink()
        raise DatasetUnavailableError(
            f"the download from {source.url} is corrupt ({problem}); run again to retry"
        )
    part.replace(archive)


def _extract(archive: Path, target: Path, source: ArchiveSource) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{source.name}.extracting-", dir=target.parent))
    try:
        try:
            with tarfile.open(archive) as tar:
                # The "data" filter refuses absolute paths, links out of the folder and devices.
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, filter="data")
                else:  # pragma: no cover - Python releases before the filter existed
                    tar.extractall(staging)
                # tarfile stops quietly at the first unreadable header after the first member, so
                # a corrupt archive can look complete. Reading the compressed stream to its end
                # makes gzip check its CRC over everything.
                while tar.fileobj.read(_CHUNK):
                    pass
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise DatasetUnavailableError(
                f"{archive} is corrupt or truncated ({exc}). Delete it and run again to download "
                f"a fresh copy from {source.url}"
            ) from exc
        extracted = _dataset_root(staging)
        if extracted is None:
            raise DatasetUnavailableError(
                f"{archive} does not contain a dataset with train/ and val/ class folders"
            )
        # The rename is the commit point: before it nothing is under the final name.
        extracted.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _dataset_root(folder: Path) -> Path | None:
    if is_image_folder(folder):
        return folder
    children = [child for child in folder.iterdir() if child.is_dir()]
    if len(children) == 1 and is_image_folder(children[0]):
        return children[0]
    return None
