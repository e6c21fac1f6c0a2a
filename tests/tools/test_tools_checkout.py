"""A checkout's doors (run.py, scripts/<tool>.py) find the repository root one way
(drsom.tools.checkout_root), and scripts/README.md lists every script."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from drsom.tools import checkout_root, run_in_checkout

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"


def test_the_root_is_the_folder_holding_pyproject_above_the_script():
    assert checkout_root(REPO / "run.py") == REPO
    assert checkout_root(SCRIPTS / "plot_curves.py") == REPO
    assert checkout_root(SCRIPTS / "slurm" / "up.sh") == REPO


def test_a_script_outside_a_checkout_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not in a checkout"):
        checkout_root(tmp_path / "scripts" / "plot_curves.py")


def test_a_tool_script_runs_its_tool_with_the_root_and_exits_with_its_status(monkeypatch):
    seen = []

    def main(*, base_dir):
        seen.append(base_dir)
        return 3

    monkeypatch.setitem(sys.modules, "drsom.tools.fake", types.SimpleNamespace(main=main))
    with pytest.raises(SystemExit) as ended:
        run_in_checkout("fake", SCRIPTS / "fake.py")
    assert (ended.value.code, seen) == (3, [REPO])


def test_every_script_has_its_line_in_the_scripts_readme():
    listed = (SCRIPTS / "README.md").read_text()
    scripts = [p for p in SCRIPTS.rglob("*") if p.suffix in (".py", ".sh")]
    assert scripts
    missing = [
        str(p.relative_to(SCRIPTS)) for p in scripts if str(p.relative_to(SCRIPTS)) not in listed
    ]
    assert not missing, f"scripts/README.md does not list {missing}"
