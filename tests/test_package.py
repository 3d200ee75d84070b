"""The package's public surface."""

import lightning_accel


def test_public_api_is_exported_and_importable():
    assert lightning_accel.__version__
    for name in lightning_accel.__all__:
        assert hasattr(lightning_accel, name), name
    assert len(set(lightning_accel.__all__)) == len(lightning_accel.__all__)
