"""Every test file is named after what it tests (docs/development.md, "Tests"): in the folder of its
room, ``test_<room>_<module>[_<aspect>].py`` for ``drsom/<room>/<module>.py``, ``test_<room>.py``
for the room's ``__init__.py``; ``tests/suite/`` holds the tests of the checkout as a whole."""

from __future__ import annotations

from pathlib import Path

import drsom

TESTS = Path(__file__).resolve().parents[1]
PACKAGE = Path(drsom.__file__).parent


def module_of(test: Path) -> str | None:
    """The module ``test`` is named after (``drsom/<room>/<module>.py``); None: it names none."""
    room = test.parent.name
    stem = test.stem.removeprefix("test_")
    if stem == room:
        return f"{room}/__init__"
    if not stem.startswith(room + "_"):
        return None
    parts = stem.removeprefix(room + "_").split("_")
    for n in range(len(parts), 0, -1):  # the longest module name the file starts with
        module = "_".join(parts[:n])
        if (PACKAGE / room / f"{module}.py").is_file():
            return f"{room}/{module}"
    return None


def test_every_test_file_names_the_module_it_tests():
    rooms = [d for d in TESTS.iterdir() if d.is_dir() and (PACKAGE / d.name).is_dir()]
    assert len(rooms) >= 9
    unnamed = [
        str(t.relative_to(TESTS))
        for room in rooms
        for t in room.glob("test_*.py")
        if not module_of(t)
    ]
    assert unnamed == []


def test_the_rule_tells_a_module_from_a_near_miss():
    assert module_of(TESTS / "optim" / "test_optim_drsom_habits.py") == "optim/drsom"
    assert module_of(TESTS / "tools" / "test_tools_export_wandb.py") == "tools/export_wandb"
    assert module_of(TESTS / "data" / "test_data.py") == "data/__init__"
    assert module_of(TESTS / "store" / "test_run_folder.py") is None  # the room's name first
    assert module_of(TESTS / "store" / "test_store_records.py") is None  # no store/records.py
