"""Fetching datasets: a local archive served through a file:// URL stands in for the network."""

import tarfile

import pytest

from lightning_accel.vision.download import (
    IMAGENETTE_SOURCES,
    ArchiveSource,
    DatasetUnavailableError,
    default_cache_dir,
    fetch_dataset,
    is_image_folder,
)

from .conftest import CLASSES, head_md5


def source_for(archive, **overrides) -> ArchiveSource:
    checks = {"size": archive.stat().st_size, "head_md5": head_md5(archive)}
    checks.update(overrides)
    return ArchiveSource("mini", archive.as_uri(), **checks)


def leftovers(root):
    """Everything in the cache folder, by name."""
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_downloads_checks_and_extracts_into_the_cache(tmp_path, archive):
    root = tmp_path / "cache"
    path = fetch_dataset(source_for(archive), root, progress=False)
    assert path == root / "mini"
    assert sorted(d.name for d in (path / "train").iterdir()) == list(CLASSES)
    assert len(list((path / "val" / CLASSES[0]).iterdir())) == 2
    assert leftovers(root) == ["mini", "mini.tgz"]  # no .part file, no staging folder


def test_an_extracted_folder_is_used_without_the_network(tmp_path, archive):
    root = tmp_path / "cache"
    fetch_dataset(source_for(archive), root, progress=False)
    (root / "mini.tgz").unlink()
    offline = ArchiveSource("mini", "http://127.0.0.1:9/mini.tgz")
    assert fetch_dataset(offline, root, progress=False) == root / "mini"


def test_an_archive_put_in_the_cache_by_hand_is_used_offline(tmp_path, archive):
    root = tmp_path / "cache"
    root.mkdir()
    (root / "mini.tgz").write_bytes(archive.read_bytes())
    source = ArchiveSource("mini", "http://127.0.0.1:9/mini.tgz", archive.stat().st_size)
    assert is_image_folder(fetch_dataset(source, root, progress=False))


def test_offline_says_what_is_missing_and_where_to_put_it(tmp_path):
    root = tmp_path / "cache"
    source = ArchiveSource("mini", "http://127.0.0.1:9/mini.tgz")
    with pytest.raises(DatasetUnavailableError) as err:
        fetch_dataset(source, root, progress=False)
    message = str(err.value)
    assert "http://127.0.0.1:9/mini.tgz" in message
    assert "mini.tgz" in message and str(root) in message
    assert leftovers(root) == []


def test_a_truncated_download_is_rejected_and_removed(tmp_path, archive):
    truncated = tmp_path / "server" / "mini.tgz"
    truncated.parent.mkdir()
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    source = source_for(truncated, size=archive.stat().st_size)
    root = tmp_path / "cache"
    with pytest.raises(DatasetUnavailableError, match="truncated"):
        fetch_dataset(source, root, progress=False)
    assert leftovers(root) == []


def test_a_download_with_the_wrong_hash_is_rejected(tmp_path, archive):
    root = tmp_path / "cache"
    with pytest.raises(DatasetUnavailableError, match="MD5"):
        fetch_dataset(source_for(archive, head_md5="0" * 32), root, progress=False)
    assert leftovers(root) == []


def test_a_corrupt_archive_in_the_cache_is_reported_not_extracted(tmp_path, archive):
    root = tmp_path / "cache"
    root.mkdir()
    (root / "mini.tgz").write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(DatasetUnavailableError, match="Delete it"):
        fetch_dataset(source_for(archive), root, progress=False)
    assert leftovers(root) == ["mini.tgz"]  # the user's file is left for them to inspect


def test_corruption_found_during_extraction_leaves_no_dataset_behind(tmp_path, archive):
    # Without published checks, only gzip's CRC and the tar structure can catch corruption.
    data = bytearray(archive.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\0" * 64
    corrupt = tmp_path / "server" / "mini.tgz"
    corrupt.parent.mkdir()
    corrupt.write_bytes(bytes(data))
    root = tmp_path / "cache"
    source = ArchiveSource("mini", corrupt.as_uri())
    with pytest.raises(DatasetUnavailableError, match="corrupt or truncated"):
        fetch_dataset(source, root, progress=False)
    assert "mini" not in leftovers(root)
    assert not [name for name in leftovers(root) if "extracting" in name]


def test_an_interrupted_extraction_is_never_mistaken_for_a_dataset(tmp_path, archive, monkeypatch):
    root = tmp_path / "cache"
    original = tarfile.TarFile.extractall

    def crash_halfway(self, path, *args, **kwargs):
        members = self.getmembers()
        super_extract = original
        super_extract(self, path, members=members[: len(members) // 2], filter="data")
        raise KeyboardInterrupt

    monkeypatch.setattr(tarfile.TarFile, "extractall", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        fetch_dataset(source_for(archive), root, progress=False)
    assert leftovers(root) == ["mini.tgz"]
    monkeypatch.undo()
    assert is_image_folder(fetch_dataset(source_for(archive), root, progress=False))


def test_an_archive_without_the_layout_is_refused(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    archive = tmp_path / "flat.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="flat")
    root = tmp_path / "cache"
    with pytest.raises(DatasetUnavailableError, match="train/ and val/"):
        fetch_dataset(ArchiveSource("flat", archive.as_uri()), root, progress=False)
    assert leftovers(root) == ["flat.tgz"]


def test_a_folder_in_the_way_is_reported(tmp_path, archive):
    root = tmp_path / "cache"
    (root / "mini" / "train").mkdir(parents=True)
    with pytest.raises(DatasetUnavailableError, match="delete it"):
        fetch_dataset(source_for(archive), root, progress=False)


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_ACCEL_DATA", str(tmp_path / "data"))
    assert default_cache_dir() == tmp_path / "data"
    monkeypatch.delenv("LIGHTNING_ACCEL_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "lightning-accel"


def test_the_published_sources_are_fast_ai_archives():
    assert set(IMAGENETTE_SOURCES) == {
        (dataset, variant)
        for dataset in ("imagenette", "imagewoof")
        for variant in ("160", "320", "full")
    }
    source = IMAGENETTE_SOURCES[("imagenette", "160")]
    assert source.url == "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"
    assert source.name == "imagenette2-160" and source.size == 99003388
    assert all(len(s.head_md5) == 32 for s in IMAGENETTE_SOURCES.values())


def test_the_download_shows_a_progress_bar(tmp_path, archive, capsys):
    fetch_dataset(source_for(archive), tmp_path / "cache", progress=True)
    err = capsys.readouterr().err
    assert "Downloading mini.tgz" in err and "100%" in err
