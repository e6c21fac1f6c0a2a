"""The floors of drsom/__init__.py hold: no room imports one above it or beside it.

The contract is import-linter's (``[tool.importlinter]`` in pyproject.toml, run by ``make lint``);
here it is run on the package as it is, and the floors the package's docstring states are checked
to be the contract's, so neither can change without the other.
"""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

import drsom

REPO = Path(__file__).resolve().parents[2]


def contract_floors() -> list[list[str]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    return [sorted(room.strip() for room in floor.split("|")) for floor in reversed(layers)]


def docstring_floors() -> list[list[str]]:
    """Item ``n.`` of the docstring's list (its lines joined): the room it names first and those
    named after each ``|``."""
    items = re.findall(r"^\d\. (.*?)(?=^\d\. |^$)", drsom.__doc__, re.MULTILINE | re.DOTALL)
    return [sorted(re.findall(r"(?:^|\| )``(\w+)``", " ".join(item.split()))) for item in items]


def test_the_docstring_states_the_contracts_floors():
    assert docstring_floors() == contract_floors()
    assert len(contract_floors()) == 6


def test_every_room_is_on_a_floor():
    package = Path(drsom.__file__).parent
    rooms = {p.parent.name for p in package.glob("*/__init__.py")} - {"configs"}
    rooms |= {p.stem for p in package.glob("*.py")} - {"__init__", "__main__"}
    assert rooms == {room for floor in contract_floors() for room in floor}


def test_no_room_imports_upward(capsys):
    from importlinter.cli import lint_imports

    # no cache: nothing is written into the repository
    status = lint_imports(str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    assert status == 0, capsys.readouterr().out[-3000:]


def test_each_room_says_the_floor_it_stands_on():
    package = Path(drsom.__file__).parent
    floor_of = {room: n for n, floor in enumerate(contract_floors(), 1) for room in floor}
    rooms = [p.parent.name for p in package.glob("*/__init__.py") if p.parent.name != "configs"]
    said = {
        room: re.search(r"^Floor (\d)", (package / room / "__init__.py").read_text(), re.M)
        for room in rooms
    }
    assert {room: int(m.group(1)) if m else None for room, m in said.items()} == {
        room: floor_of[room] for room in rooms
    }
