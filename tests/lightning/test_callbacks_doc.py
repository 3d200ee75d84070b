"""docs/callbacks.md is runnable: its Python blocks execute in order and their asserts hold."""

import re
from pathlib import Path

import lightning
import pytest
from packaging.version import Version

DOC = Path(__file__).parents[2] / "docs" / "callbacks.md"


@pytest.mark.slow
@pytest.mark.skipif(
    Version(lightning.__version__) < Version("2.5"),
    reason="the resume example is exact from Lightning 2.5 on (docs/callbacks.md says why)",
)
def test_the_callbacks_guide_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # checkpoints, logs and figures land here
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 6
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name} block {i}", "exec"), namespace)
    assert (tmp_path / "loss.png").exists()
