"""The ``drsom`` command (drsom/command.py): one name per tool, every tool under it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

import drsom.tools
from drsom.command import main
from drsom.launch import cli

TOOL_DIR = Path(drsom.tools.__file__).parent


def test_every_tool_module_is_a_subcommand_and_nothing_else_is():
    modules = {
        p.stem
        for p in TOOL_DIR.glob("*.py")
        if p.stem != "__init__"
        and hasattr(importlib.import_module(f"drsom.tools.{p.stem}"), "main")
    }
    assert modules == set(drsom.tools.TOOLS)


def test_help_lists_every_tool_and_the_runner(capsys):
    assert main(["--help"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert listed == ["run", *(name.replace("_", "-") for name in drsom.tools.TOOLS)]


@pytest.mark.parametrize("name", ["tables", "export-wandb", "export_wandb", "status"])
def test_a_subcommand_is_its_tools_main(name, monkeypatch, tmp_path):
    module = importlib.import_module(f"drsom.tools.{name.replace('-', '_')}")
    seen = {}
    monkeypatch.setattr(
        module, "main", lambda argv, base_dir=None: seen.update(a=argv, b=base_dir) or 7
    )
    assert main([name, "--x", "1"], base_dir=tmp_path) == 7
    assert seen == {"a": ["--x", "1"], "b": tmp_path}


def test_an_unknown_tool_or_none_is_exit_2(capsys):
    assert main(["plot"]) == 2
    assert "error: no tool 'plot'" in capsys.readouterr().err
    assert main([]) == 2


def test_run_hands_its_arguments_to_the_runners_command_line(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(sys, "argv", ["drsom"])
    monkeypatch.setattr(cli, "main", lambda base_dir=None: seen.update(argv=sys.argv, b=base_dir))
    assert main(["run", "-m", "optimizer=adam,sgd"], base_dir=tmp_path) == 0
    assert seen == {"argv": ["drsom run", "-m", "optimizer=adam,sgd"], "b": tmp_path}
