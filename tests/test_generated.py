"""The documents the fuzzing and differential tests draw are the same in any process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Short: Hypothesis keeps only short strings among the constants it reads.
MAGIC = "zqmagic"
# In a process of its own: one where the test run has loaded the project's modules already
# may have spent Hypothesis's time for reading them, and read no more.
DRAW_TWICE = """
import importlib, sys
from hypothesis import strategies as st
from tests.generated import _drawn
before = _drawn(st.text(), 500)
sys.path.insert(0, sys.argv[1])
importlib.import_module("module_with_constants")
after = _drawn(st.text(), 500)
print(sys.argv[2] in after, after == before)
"""


def test_what_is_drawn_does_not_depend_on_the_modules_loaded(tmp_path: Path) -> None:
    """Hypothesis draws some values among the constants of the project's modules it finds
    loaded; a module imported in between (by another test, or changed since) must not
    change what is drawn."""
    (tmp_path / "module_with_constants.py").write_text(f"CONSTANT = {MAGIC!r}\n")
    finished = subprocess.run(
        [sys.executable, "-c", DRAW_TWICE, str(tmp_path), MAGIC],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    assert finished.stdout.split() == ["False", "True"], finished.stdout
