"""A checkout's doors (run.py, scripts/<tool>.py) find the repository root one way
(drsom.tools.checkout_root), and scripts/README.md lists every script."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from drsom.tools import checkout_main, checkout_root

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"


def test_the_root_is_the_folder_holding_pyproject_above_the_script():
    assert checkout_root(REPO / "run.py") == REPO
    assert checkout_root(SCRIPTS / "plot_curves.py") == REPO
    assert checkout_root(SCRIPTS / "slurm" / "up.sh") == REPO


def test_a_script_outside_a_checkout_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not in a checkout"):
        checkout_root(tmp_path / "scripts" / "plot_curves.py")


def test_a_tool_script_runs_its_tool_with_the_root(monkeypatch):
    seen = []

    def main(argv=None, *, base_dir):
        seen.append((argv, base_dir))
        return 3

    monkeypatch.setitem(sys.modules, "drsom.tools.fake", types.SimpleNamespace(main=main))
    assert checkout_main("fake", SCRIPTS / "fake.py")(["--x"]) == 3
    assert seen == [(["--x"], REPO)]


def test_every_script_has_its_line_in_the_scripts_readme():
    listed = (SCRIPTS / "README.md").read_text()
    scripts = [p for p in SCRIPTS.rglob("*") if p.suffix in (".py", ".sh")]
    assert scripts
    missing = [
        str(p.relative_to(SCRIPTS)) for p in scripts if str(p.relative_to(SCRIPTS)) not in listed
    ]
    assert not missing, f"scripts/README.md does not list {missing}"
