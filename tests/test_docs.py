"""The documentation site builds with `mkdocs build --strict`: no broken links or references."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return pages


def _config() -> dict:
    # mkdocs.yml is plain YAML (no !!python tags), so the safe loader reads it.
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    pages = _nav_pages(_config()["nav"])
    docs = ROOT / "docs"
    missing = [page for page in pages if not (docs / page).is_file()]
    assert not missing, f"nav lists pages that do not exist: {missing}"
    unlisted = sorted(
        str(p.relative_to(docs))
        for p in docs.rglob("*.md")
        if p.relative_to(docs).as_posix() not in pages
    )
    assert not unlisted, f"pages missing from the nav in mkdocs.yml: {unlisted}"


@pytest.mark.slow
def test_site_builds_strictly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-5000:]
    site = tmp_path / "site"
    for page in ("index.html", "tensorboard/index.html", "api/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api" / "index.html").read_text()
    # mkdocstrings rendered the public API from the docstrings, not an empty page.
    for anchor in (
        "optim.AccelOptimizer",
        "lightning.CallbackBridge",
        "loop.Callback",
        "schedule.fit_one_cycle",
        "monitor.OptimizerStatsMonitor",
    ):
        assert f'id="lightning_accel.{anchor}"' in api, anchor
