"""docs/optimizer.md is runnable: its Python blocks execute in order and their asserts hold."""

import re
from pathlib import Path

DOC = Path(__file__).parents[2] / "docs" / "optimizer.md"


def test_the_optimizer_guide_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 8
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name} block {i}", "exec"), namespace)
