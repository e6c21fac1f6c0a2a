"""The damage fuzzer: a real run folder damaged at random, read back by every reader of the store.

One tiny finished run is made per module (the fake CIFAR-10, DRSOM, 3 epochs); each example copies
it into a fresh folder, damages one file the way stores get damaged (cut anywhere, a byte
flipped, a digit typed over, a line inserted, deleted, doubled or swapped, a file renamed or
removed, the folder renamed) and reads it with

* the checked reader, ``drsom.store.state.run_state``;
* the tables' and figures' reader, ``drsom.analysis.runs.load_store`` (and ``load_run``);
* the store's summary reader, ``RunDir.read_summary``.

Each reader must either refuse in one line (a broken run with a one-line problem; a run left out
with a one-line report; a summary read as absent) or return exactly what it returned for the
undamaged folder: never other numbers, never a traceback. Hypothesis draws the damages
derandomized (the same examples on every run); ``slow`` runs many more.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from run_helpers import only_run, run_inprocess, tiny

from drsom.analysis.runs import load_run, load_store
from drsom.store.folder import RunDir
from drsom.store.state import Status, run_state

pytestmark = pytest.mark.usefixtures("one_thread")

FILES = ("summary.json", "metrics.csv", "steps.csv", "config.yaml")
# lines a damage may insert: a copy of one of the file's own lines is drawn as well
FOREIGN_LINES = (b"", b"\n", b",,,", b"1,2,3", b"# note", b"{}", b"nan", b"epoch: 9", b"\xff\xfe")
NAMES = ("summary.json.bak", "metrics.CSV", "steps.csv~", "config.yml", ".summary.json.tmp")


@pytest.fixture(scope="module")
def original(cifar_root, tmp_path_factory) -> Path:
    """A finished DRSOM run of the tests' tiny protocol, without its checkpoints (no reader here
    opens them): config.yaml, metrics.csv, steps.csv and summary.json as the runner wrote them."""
    results = tmp_path_factory.mktemp("fuzz") / "runs"
    args = tiny(cifar_root, results, "optimizer=drsom", "trainer.epochs=3")
    assert run_inprocess(args) == "finished"
    folder = only_run(results)
    for path in folder.path.iterdir():
        if path.name not in FILES:
            path.unlink()
    assert sorted(p.name for p in folder.path.iterdir()) == sorted(FILES)
    return folder.path


@pytest.fixture(scope="module")
def expected(original) -> dict[str, Any]:
    return readings(original)


# ------------------------------------------------------------------------------- damages
@st.composite
def damages(draw) -> tuple:
    name = draw(st.sampled_from(FILES))
    how = draw(
        st.sampled_from(
            ["cut", "flip", "retype", "insert", "delete", "double", "swap", "rename", "remove"]
            + ["move"]
        )
    )
    # positions as fractions of the file: one strategy fits every file's length
    where = draw(st.floats(0, 1, exclude_max=True))
    other = draw(st.floats(0, 1, exclude_max=True))
    return name, how, where, other, draw(st.integers(1, 255)), draw(st.integers(0, 9999))


def damage(folder: Path, how: tuple) -> Path:
    """Damage the copy in ``folder``; the folder the run is in afterwards (``move`` renames it)."""
    name, kind, where, other, byte, pick = how
    path = folder / name
    raw = path.read_bytes()
    lines = raw.splitlines(keepends=True)
    at = int(where * len(lines))
    if kind == "cut":
        path.write_bytes(raw[: int(where * len(raw))])
    elif kind == "flip":
        i = int(where * len(raw))
        path.write_bytes(raw[:i] + bytes([raw[i] ^ byte]) + raw[i + 1 :])
    elif kind == "retype":  # a digit typed over by another: every check but the seal passes
        digits = [i for i, b in enumerate(raw) if chr(b).isdigit()]
        i = digits[int(where * len(digits))]
        typed = str((raw[i] - 48 + 1 + pick % 9) % 10).encode()
        path.write_bytes(raw[:i] + typed + raw[i + 1 :])
    elif kind == "insert":
        pool = [*FOREIGN_LINES, *(line.rstrip(b"\r\n") for line in lines)]
        lines.insert(at, pool[pick % len(pool)] + b"\n")
        path.write_bytes(b"".join(lines))
    elif kind == "delete":
        del lines[at]
        path.write_bytes(b"".join(lines))
    elif kind == "double":
        lines.insert(at, lines[at])
        path.write_bytes(b"".join(lines))
    elif kind == "swap":
        j = int(other * len(lines))
        lines[at], lines[j] = lines[j], lines[at]
        path.write_bytes(b"".join(lines))
    elif kind == "rename":
        path.rename(folder / NAMES[pick % len(NAMES)])
    elif kind == "remove":
        path.unlink()
    elif kind == "move":  # the folder renamed: another seed's name, or a copy's
        moved = folder.with_name(folder.name[:-1] + str(pick % 10) if pick % 2 else "copy")
        folder.rename(moved)
        return moved
    return folder


# ------------------------------------------------------------------------------- readers
def readings(folder: Path) -> dict[str, Any]:
    """What each reader makes of ``folder``, or the exception it raised."""
    out: dict[str, Any] = {}
    for reader, read in (
        ("state", lambda: run_state(RunDir(folder))),
        ("run", lambda: load_run(folder)),
        ("store", lambda: _store(folder)),
        ("summary", lambda: RunDir(folder).read_summary()),
    ):
        try:
            out[reader] = read()
        except Exception as exc:  # a reader must not raise on a damaged folder: reported below
            out[reader] = exc
    return out


def _store(folder: Path) -> tuple[list, list[str], list[str]]:
    said: list[str] = []
    left_out: list[str] = []
    runs = load_store(folder.parent, report=said.append, left_out=left_out)
    return runs, said, left_out


def one_line(text: Any) -> bool:
    return isinstance(text, str) and text.strip() != "" and "\n" not in text and "\r" not in text


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (metrics hold NaN for empty cells)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def check_state(state: Any, want: Any) -> None:
    assert not isinstance(state, Exception), f"run_state raised {state!r}"
    if state.status == Status.BROKEN:
        assert one_line(state.problem), state.problem
        return
    assert state.problem is None and state.status == want.status
    assert same(state.summary, want.summary), "run_state: another summary"
    assert state.columns == want.columns and same(state.metrics, want.metrics), "other rows"
    assert same(state.config, want.config), "run_state: another config"


def check_run(run: Any, want: Any) -> None:
    assert not isinstance(run, Exception), f"load_run raised {run!r}"
    if run is None:  # no config it can read: load_store reports the folder (check_store)
        return
    if run.problem is not None:
        assert one_line(run.problem) and run.status == Status.BROKEN and run.metrics.empty
        return
    assert run.run_id == want.run_id and run.status == want.status
    assert same(run.summary, want.summary) and same(run.config, want.config)
    pd.testing.assert_frame_equal(run.metrics, want.metrics)


def check_store(found: Any, want: Any, folder: Path) -> None:
    assert not isinstance(found, Exception), f"load_store raised {found!r}"
    runs, said, left_out = found
    assert all(one_line(line) for line in said), said
    if not runs:  # left out: said on one line naming the folder, and named in left_out
        assert any(line.startswith(f"broken run {folder}: ") for line in said), said
        assert len(left_out) == 1 and one_line(left_out[0]), left_out
        return
    (run,) = runs
    if run.problem is not None:
        assert said == [f"broken run {folder}: {run.problem}; counted as unfinished"], said
    check_run(run, want[0][0])


def check_summary(summary: Any, want: Any) -> None:
    assert not isinstance(summary, Exception), f"read_summary raised {summary!r}"
    # None: read as absent, the documented refusal (the run resumes from its checkpoint)
    assert summary is None or same(summary, want), "read_summary: another summary"


def check_damage(original: Path, expected: dict[str, Any], how: tuple) -> None:
    with tempfile.TemporaryDirectory(prefix="drsom-fuzz-") as tmp:
        folder = Path(tmp) / "runs" / original.name
        shutil.copytree(original, folder)
        folder = damage(folder, how)
        got = readings(folder)
        check_state(got["state"], expected["state"])
        check_run(got["run"], expected["run"])
        check_store(got["store"], expected["store"], folder)
        check_summary(got["summary"], expected["summary"])


FAST = settings(
    derandomize=True,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_the_undamaged_copy_reads_as_the_finished_run(original, expected):
    state = expected["state"]
    assert state.status == Status.FINISHED and state.problem is None and len(state.metrics) == 3
    check_damage(original, expected, ("steps.csv", "swap", 0.0, 0.0, 1, 0))  # line 1 with itself
    assert expected["run"].metrics["test_acc"].tolist() == [r["test_acc"] for r in state.metrics]


@FAST
@given(how=damages())
def test_a_damaged_run_folder_is_refused_in_one_line_or_read_exactly(original, expected, how):
    check_damage(original, expected, how)


@pytest.mark.slow
@settings(FAST, max_examples=5000)
@given(how=damages())
def test_many_damaged_run_folders(original, expected, how):
    check_damage(original, expected, how)
