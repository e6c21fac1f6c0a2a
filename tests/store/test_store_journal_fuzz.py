"""A damage fuzzer for a tuning study's journal (drsom/store/journal.py), with Hypothesis.

One small journal, written as the sweeper writes one, is damaged in random ways: cut anywhere,
a byte flipped, a line inserted (a copy of another, an empty one, random bytes), deleted or two
swapped. Every read of the damaged file then either refuses in one line (``JournalError``, which
the sweeper and the tools print as their one error line, exit 2), leaving the file as it was, or
returns exactly what the original journal held up to some record at or after the damage: all of
it, or, where only its end was damaged (a cut, a last line broken), the study as it was a few
records earlier, cut back and said in one line (a cut at a line's end cannot be told from an
older journal). After a read that did not refuse, the study takes a write and reads it back.

The draws are derandomized (the same examples on every run, no database written); the default
suite runs ``EXAMPLES`` of them, ``-m slow`` ``SLOW_EXAMPLES``.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from study_journals import make_study, seen

from drsom.store.journal import JournalError
from drsom.store.study import open_storage

EXAMPLES = 300
SLOW_EXAMPLES = 3000


@dataclass(frozen=True)
class Original:
    data: bytes
    lines: list[bytes]
    prefixes: list[list[tuple]]  # what the first m records hold, for m = 0 .. len(lines)

    def lines_before(self, offset: int) -> int:
        """How many whole lines end at or before byte ``offset``."""
        end, count = 0, 0
        for line in self.lines:
            end += len(line)
            if end > offset:
                break
            count += 1
        return count


def _original() -> Original:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.journal"
        make_study(path, trials=3)
        data = path.read_bytes()
        lines = data.splitlines(keepends=True)
        prefixes = []
        for m in range(len(lines) + 1):
            path.write_bytes(b"".join(lines[:m]))
            prefixes.append(seen(path))
    return Original(data, lines, prefixes)


ORIGINAL = _original()


class Damage:
    """A damaged journal (a plain class: Hypothesis prints a failing one by its ``repr``)."""

    def __init__(self, data: bytes, at: int, what: str) -> None:
        self.data, self.what = data, what
        self.at = at  # the offset of its first damaged byte

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example
        return f"Damage({self.what})"


@st.composite
def damaged(draw) -> Damage:
    """The original journal, damaged once."""
    data, lines = ORIGINAL.data, ORIGINAL.lines
    starts = [sum(len(line) for line in lines[:i]) for i in range(len(lines) + 1)]
    kind = draw(st.sampled_from(["cut", "flip", "insert", "delete", "swap"]))
    if kind == "cut":
        at = draw(st.integers(0, len(data) - 1))
        return Damage(data[:at], at, f"cut at {at}")
    if kind == "flip":
        at = draw(st.integers(0, len(data) - 1))
        mask = draw(st.integers(1, 255))
        flipped = bytearray(data)
        flipped[at] ^= mask
        return Damage(bytes(flipped), at, f"byte {at} ^ {mask}")
    i = draw(st.integers(0, len(lines) - (0 if kind == "insert" else 1)))
    changed = list(lines)
    if kind == "insert":
        line = draw(
            st.one_of(
                st.sampled_from(lines),
                st.just(b"\n"),
                st.binary(max_size=40).map(lambda b: b + b"\n"),
            )
        )
        changed.insert(i, line)
    elif kind == "delete":
        del changed[i]
    else:
        j = draw(st.integers(0, len(lines) - 1))
        changed[i], changed[j] = changed[j], changed[i]
        i = min(i, j)
    shown = (changed if kind == "insert" else lines)[i][:60]
    return Damage(b"".join(changed), starts[i], f"{kind} line {i + 1}: {shown!r}")


def check_one_read(damage: Damage) -> None:
    data, at, what = damage.data, damage.at, damage.what
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.journal"
        path.write_bytes(data)
        said = io.StringIO()
        with contextlib.redirect_stderr(said):
            try:
                read = seen(path)
            except JournalError as exc:
                assert "\n" not in str(exc) and str(exc).startswith(f"study journal {path}: "), what
                assert path.read_bytes() == data, f"{what}: refused, yet the file was changed"
                assert not said.getvalue(), what
                event("refused in one line")
                return
        kept = ORIGINAL.lines_before(at)
        allowed = range(kept, len(ORIGINAL.lines) + 1)
        assert any(read == ORIGINAL.prefixes[m] for m in allowed), f"{what}: read as another study"
        m = next(m for m in allowed if read == ORIGINAL.prefixes[m])
        event("read whole" if m == len(ORIGINAL.lines) else "read as it was some records earlier")
        said = said.getvalue()
        if path.read_bytes() != data:  # repaired: cut back to the records it read, said once
            assert path.read_bytes() == b"".join(ORIGINAL.lines[:m]), what
            assert said.count("\n") == 1 and "its last line was cut" in said, (what, said)
        else:
            assert not said, (what, said)
        if m:  # the study goes on: a write lands after the last record and reads back
            open_storage(str(path)).set_study_user_attr(0, "fuzz", what)
            again = seen(path)
            assert again[0][1] == {**read[0][1], "fuzz": what} and again[0][2:] == read[0][2:]


FUZZ = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@settings(max_examples=EXAMPLES, **FUZZ)
@given(damaged())
def test_a_damaged_journal_is_refused_in_one_line_or_read_as_written(damage):
    check_one_read(damage)


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, **FUZZ)
@given(damaged())
def test_a_damaged_journal_is_refused_in_one_line_or_read_as_written_many(damage):
    check_one_read(damage)


def test_the_fuzzer_sees_each_kind_of_outcome():
    """The draws reach every outcome the property allows (a fuzzer that only ever saw refusals
    would pass with a reader that refuses everything)."""
    outcomes = {"refused": 0, "whole": 0, "earlier": 0}
    data = ORIGINAL.data
    cases = [data[: len(data) - 25], data[:-1], data, data.replace(b"\n", b"\nx\n", 1)]
    for case in cases:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
            path = Path(tmp) / "s.journal"
            path.write_bytes(case)
            try:
                read = seen(path)
            except JournalError:
                outcomes["refused"] += 1
                continue
            outcomes["whole" if read == ORIGINAL.prefixes[-1] else "earlier"] += 1
    assert outcomes == {"refused": 1, "whole": 1, "earlier": 2}
