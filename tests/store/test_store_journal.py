"""A tuning study's journal file (drsom/store/journal.py, drsom/store/study.py) damaged on disk:
a cut last line is cut back under the journal's lock and said in one line, anything else that
does not read as written is refused in one line naming the file, the line and what to do, with
nothing written; a launches folder removed while a launch runs is made again.

Each case damages a real journal: one made by optuna through the store's ``open_storage`` as the
sweeper makes it (in-process, fast), and one made by a real launch of ``run.py`` for the case of
the issue (cut, relaunch, damage, relaunch)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from study_journals import make_study, seen

from drsom.analysis.studies import draw_studies
from drsom.store.journal import CHAIN, WHAT_TO_DO, JournalError
from drsom.store.locks import lock_is_held
from drsom.store.study import Launch, open_storage

REPO = Path(__file__).resolve().parents[2]


def replayed(lines: list[bytes], tmp: Path) -> list[tuple]:
    """What a journal of exactly ``lines`` holds (read from a copy)."""
    copy = tmp / "copy.journal"
    copy.write_bytes(b"".join(lines))
    try:
        return seen(copy)
    finally:
        copy.unlink()


@pytest.fixture
def journal(tmp_path) -> Path:
    path = tmp_path / "studies" / "s.journal"
    path.parent.mkdir()
    make_study(path)
    return path


def test_every_record_is_chained_and_reads_back_as_written(journal):
    lines = journal.read_bytes().splitlines()
    assert len(lines) > 15 and all(json.loads(line)[CHAIN] for line in lines)
    ((name, attrs, *trials),) = seen(journal)
    assert name == "s" and attrs["drsom"]["objective"] == "final"
    assert [t[1] for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED] + [
        TrialState.COMPLETE
    ]
    # optuna's own reader reads the file too: the chain is one more key it ignores
    plain = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="s", storage=plain)
    assert [
        (t.number, t.state, t.value, t.params, t.intermediate_values, t.user_attrs)
        for t in study.trials
    ] == trials


def test_a_cut_last_line_is_cut_back_once_said_in_one_line_and_the_study_goes_on(
    journal, tmp_path, capsys
):
    whole = journal.read_bytes()
    lines = whole.splitlines(keepends=True)
    subprocess.run(["truncate", "-s", "-25", str(journal)], check=True)  # as in the issue
    assert not capsys.readouterr().err
    before = replayed(lines[:-1], tmp_path)

    storage = open_storage(str(journal))
    err = capsys.readouterr().err
    assert err == (
        f"study journal {journal}: its last line was cut ({len(lines[-1]) - 25} bytes without a "
        f"line end, left by a writer that died); cut back to its last complete record (line "
        f"{len(lines) - 1})\n"
    )
    assert journal.read_bytes() == b"".join(lines[:-1])
    assert seen(journal) == before and not capsys.readouterr().err  # said once: repaired

    # the relaunch writes after the last complete record, and every later reader reads it all
    study = optuna.load_study(study_name="s", storage=storage)
    trial = study.ask()
    study.tell(trial, 0.25)
    assert journal.read_bytes().startswith(b"".join(lines[:-1]))
    ((*_, last),) = seen(journal)
    assert last[1:3] == (TrialState.COMPLETE, 0.25)
    assert len(seen(journal)[0]) - 2 == 5  # the 4 trials and this one


def test_a_writer_never_appends_after_a_line_cut_while_it_ran(journal, tmp_path, capsys):
    storage = open_storage(str(journal))  # opened whole; then a writer dies mid-line
    study = optuna.load_study(study_name="s", storage=storage)
    lines = journal.read_bytes().splitlines(keepends=True)
    with open(journal, "ab") as f:
        f.write(b'{"op_code":4,"worker_id":"dead","stu')
    study.set_user_attr("after", 1)
    assert "its last line was cut (36 bytes" in capsys.readouterr().err
    written = journal.read_bytes().splitlines(keepends=True)
    assert written[:-1] == lines and json.loads(written[-1])["user_attr"] == {"after": 1}
    assert seen(journal)[0][1]["after"] == 1


def _change_a_value(lines: list[bytes]) -> int:
    """A trial's value told, changed by one digit: still JSON, still an optuna record."""
    k = next(i for i, line in enumerate(lines) if b'"values":[0.' in line)
    lines[k] = lines[k].replace(b'"values":[0.', b'"values":[0.1', 1)
    return k


def _insert_garbage(lines: list[bytes]) -> int:
    lines.insert(5, b"garbage\n")
    return 5


def _delete(lines: list[bytes]) -> int:
    del lines[6]
    return 6  # the line after it no longer follows its predecessor


def _duplicate(lines: list[bytes]) -> int:
    lines.insert(8, lines[7])
    return 8


def _unchained(lines: list[bytes]) -> int:
    record = json.loads(lines[9])
    del record[CHAIN]
    lines[9] = json.dumps(record, separators=(",", ":")).encode() + b"\n"
    return 9


def _not_a_record(lines: list[bytes]) -> int:
    lines.insert(3, b'{"trial_id": 0}\n')
    return 3


def _cut_after_damage(lines: list[bytes]) -> int:
    k = _change_a_value(lines)
    lines[-1] = lines[-1][:-25]  # a cut last line is repaired only where the rest reads
    return k


DAMAGE = {
    "value-changed": (_change_a_value, "does not match its checksum (it, or a line before it, "),
    "garbage-line": (_insert_garbage, "is not a JSON record"),
    "line-deleted": (_delete, "does not match its checksum"),
    "line-repeated": (_duplicate, "does not match its checksum"),
    "checksum-removed": (_unchained, "has no checksum although the lines before it have"),
    "not-a-record": (_not_a_record, "is not a record of an optuna journal"),
    "cut-after-a-changed-line": (_cut_after_damage, "does not match its checksum"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damage_is_refused_in_one_line_naming_the_file_and_line_and_nothing_written(
    journal, case, capsys
):
    damage, what = DAMAGE[case]
    lines = journal.read_bytes().splitlines(keepends=True)
    k = damage(lines)
    journal.write_bytes(b"".join(lines))
    damaged = journal.read_bytes()
    readers = (
        lambda: seen(journal),  # drsom-select's and the figures' reader
        lambda: draw_studies(journal.parent.parent / "runs", journal.parent / "figures"),
        lambda: open_storage(str(journal)),  # a launch's, and a trial's pruner
    )
    for read in readers:
        with pytest.raises(JournalError) as caught:
            read()
        message = str(caught.value)
        assert message.startswith(f"study journal {journal}: line {k + 1} {what}"), message
        assert message.endswith(f"; {WHAT_TO_DO}") and "\n" not in message
    assert journal.read_bytes() == damaged  # nothing cut, nothing appended
    assert not capsys.readouterr().err
    assert not Path(f"{journal}.lock").exists()  # optuna's lock is left free


def test_a_journal_written_before_the_chain_reads_and_is_chained_from_then_on(tmp_path):
    shipped = sorted((REPO / "results" / "studies").glob("*.journal"))[0]
    journal = tmp_path / shipped.name
    shutil.copy(shipped, journal)
    assert CHAIN.encode() not in journal.read_bytes()
    plain = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    name = optuna.get_all_study_summaries(plain)[0].study_name
    expected = [
        (t.number, t.state, t.value)
        for t in optuna.load_study(study_name=name, storage=plain).trials
    ]
    assert [(t[0], t[1], t[2]) for t in seen(journal)[0][2:]] == expected

    open_storage(str(journal)).set_study_user_attr(0, "later", 1)
    assert seen(journal)[0][1]["later"] == 1
    lines = journal.read_bytes().splitlines(keepends=True)
    assert CHAIN.encode() in lines[-1]
    # the first chained record covers the lines before it: one of those changed is refused
    lines[1] = lines[1].replace(b'"objective":"final"', b'"objective":"best"')
    journal.write_bytes(b"".join(lines))
    with pytest.raises(JournalError, match=f"line {len(lines)} does not match its checksum"):
        seen(journal)


def test_a_cut_line_that_cannot_be_locked_is_one_line(journal, monkeypatch, capsys):
    journal.write_bytes(journal.read_bytes()[:-25])
    damaged = journal.read_bytes()

    def refused(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("os.symlink", refused)  # optuna's lock is a symlink beside the file
    with pytest.raises(JournalError) as caught:
        open_storage(str(journal))
    assert str(caught.value) == (
        f"study journal {journal}: cannot take its lock to repair its cut last line "
        "(Permission denied); make its folder writable and relaunch"
    )
    assert journal.read_bytes() == damaged and not capsys.readouterr().err


def test_a_launches_folder_removed_while_a_launch_runs_is_made_again(tmp_path, capsys):
    folder = tmp_path / "s.journal.launches"
    launch = Launch(folder)
    with launch.running():
        shutil.rmtree(folder)
        with launch.asking():
            assert (folder / "ask.lock").is_file()
        assert lock_is_held(launch.path) and Launch(folder).alive(launch.id)
        assert capsys.readouterr().err == (
            f"study launches folder {folder}: this launch's lock file was removed while it ran; "
            "made again\n"
        )
        with launch.asking():  # said once
            pass
        assert not capsys.readouterr().err
    assert not launch.path.exists() and not Launch(folder).alive(launch.id)
