"""The import contracts of pyproject.toml (``[tool.importlinter]``) hold: lint-imports exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    # PYTHONPATH: the packages of this tree, whichever checkout the venv was installed from.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
