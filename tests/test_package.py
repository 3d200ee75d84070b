"""The package's public surface and its declared dependencies."""

import re
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

import lightning_accel

ROOT = Path(__file__).resolve().parents[1]


def test_public_api_is_exported_and_importable():
    assert lightning_accel.__version__
    for name in lightning_accel.__all__:
        assert hasattr(lightning_accel, name), name
    assert len(set(lightning_accel.__all__)) == len(lightning_accel.__all__)


def _lightning_requirement() -> str:
    """The `lightning` requirement as pyproject.toml writes it (Python 3.10 has no tomllib)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    (spec,) = re.findall(r'^\s*"(lightning[<>=!~,.\d\s]*)",?$', pyproject, re.M)
    return spec


def test_the_lightning_range_is_bounded_stated_and_the_one_installed():
    # The range is the one the suite runs on in CI (newest and oldest), so it has an upper bound,
    # the README states it, and a Lightning outside it is not silently tested as if supported.
    written = _lightning_requirement()
    spec = Requirement(written).specifier
    assert any(s.operator == "<" for s in spec), f"{written}: no upper bound"
    assert f"`{written}`" in (ROOT / "README.md").read_text()
    installed = version("lightning")
    assert spec.contains(installed), f"Lightning {installed} is not in {written}"
