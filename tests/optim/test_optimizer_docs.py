"""docs/optimizer.md is runnable: its Python blocks execute in order and their asserts hold, and
its FSDP2 script runs as written, in two processes."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "optimizer.md"
SCRIPT = "# fsdp_example.py\n"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_optimizer_guide_runs_as_written():
    blocks = _blocks()
    assert len(blocks) >= 8
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name} block {i}", "exec"), namespace)


@pytest.mark.slow
def test_the_fsdp2_script_runs_as_written_and_resumes_its_sharded_checkpoint(tmp_path):
    (script,) = [b for b in _blocks() if b.startswith(SCRIPT)]
    (tmp_path / "fsdp_example.py").write_text(script)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "fsdp_example.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    shards = [p for p in (tmp_path / "sharded.ckpt").iterdir() if p.suffix == ".distcp"]
    assert len(shards) == 2  # one per process
