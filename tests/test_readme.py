"""The README's own Python snippet, run as a user runs it: saved as a script (no
``if __name__ == "__main__":`` guard) and started with python."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_snippet() -> str:
    text = README.read_text()
    section = text[text.index("## From Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_snippet_runs_as_an_unguarded_script(demo_root, tmp_path):
    script = tmp_path / "pull_demo.py"
    script.write_text(_python_snippet())
    assert "__main__" not in script.read_text() and "workers=2" in script.read_text()
    from e6ingest.demo import DEMO_VERSION

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"demo-v{DEMO_VERSION}-n1000-s0").symlink_to(demo_root)  # the demo, built
    env = {**os.environ, "E6INGEST_CACHE": str(cache)}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "written" in done.stdout and "another e6ingest run" not in done.stderr
    assert "BrokenProcessPool" not in done.stderr
    assert list((tmp_path / "out" / "shards").glob("*.tar"))
