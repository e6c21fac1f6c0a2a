"""Issue 21: a damaged store never changes a published number silently.

The store's one checked reader (``drsom.store.state``) on each way a run folder gets damaged; the
publishing tools (tables, make figures, drsom-select) stopping on a broken run, or, told to go on,
naming it; the selection written all or nothing; reproduce and the run's inputs refusing in one
line. Every store is built under tmp_path (analysis_store), never the repository's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from analysis_store import EXPERIMENT, metric_rows, write_run, write_store
from run_helpers import compose_config, compose_configs, run_inprocess, tiny

from drsom.analysis.runs import load_store
from drsom.data import validation_count
from drsom.job.validate import ConfigError, check_results_dir
from drsom.store.folder import RunDir
from drsom.store.state import Status, run_state
from drsom.tools import figures as figures_tool
from drsom.tools import select as select_tool
from drsom.tools import tables as tables_tool


# ----------------------------------------------------------------------- the checked reader
def _damage(folder: RunDir, how: str) -> None:
    """Damage ``folder`` (a finished 5-epoch run of analysis_store) the way stores get damaged."""
    raw = folder.metrics.read_bytes()
    if how == "cut-row":  # a copy cut short mid-row (no line end: the cut cell looks whole)
        folder.metrics.write_bytes(raw[: raw.rstrip().rfind(b",") + 3])
    elif how == "short-row":  # a row that lost its last cells (and kept its line end)
        lines = raw.decode().splitlines(keepends=True)
        lines[2] = lines[2].rsplit(",", 2)[0] + "\r\n"
        folder.metrics.write_text("".join(lines), newline="")
    elif how == "non-number":  # line 2 (epoch 1): its test_acc typed over by hand
        lines = raw.decode().splitlines(keepends=True)
        cells = lines[1].split(",")
        cells[_column(lines, "test_acc")] += "x"
        lines[1] = ",".join(cells)
        folder.metrics.write_text("".join(lines), newline="")
    elif how == "row-missing":  # one row short of the summary's epochs
        lines = raw.decode().splitlines(keepends=True)
        folder.metrics.write_text("".join(lines[:-1]), newline="")
    elif how == "edited-last-cell":  # whole rows, but not the numbers the summary recorded
        lines = raw.decode().splitlines(keepends=True)
        cells = lines[-1].split(",")
        cells[_column(lines, "test_acc")] = "0.99"
        lines[-1] = ",".join(cells)
        folder.metrics.write_text("".join(lines), newline="")
    elif how == "incomplete-summary":  # valid JSON, but not a finished run's record
        summary = json.loads(folder.summary.read_text())
        del summary["final"]
        folder.summary.write_text(json.dumps(summary))
    elif how == "unreadable-summary":
        folder.summary.write_text("{not json")
    elif how == "epoch-order":  # whole rows, every number right, epochs 1 and 2 swapped
        lines = raw.decode().splitlines(keepends=True)
        lines[1], lines[2] = lines[2], lines[1]
        folder.metrics.write_text("".join(lines), newline="")
    elif how == "foreign-summary":  # another finished run's record copied in: consistent in itself
        other = _sibling(folder)
        shutil.copyfile(other.summary, folder.summary)
        shutil.copyfile(other.metrics, folder.metrics)
    elif how in ("unknown-status", "unwritten-status"):  # typed over; a state no writer records
        summary = json.loads(folder.summary.read_text())
        summary["status"] = "complete" if how == "unknown-status" else "broken"
        folder.summary.write_text(json.dumps(summary))
    elif how == "typed-over":  # epoch 2's test_acc 0.8 -> 0.9: whole, parses, epochs in order
        lines = raw.decode().splitlines(keepends=True)
        cells = lines[2].split(",")
        cells[_column(lines, "test_acc")] = "0.9"
        lines[2] = ",".join(cells)
        folder.metrics.write_text("".join(lines), newline="")
    elif how == "summary-edited":  # a number of the summary itself, which nothing else repeats
        summary = json.loads(folder.summary.read_text())
        summary["device"] = "cuda:0"  # what a caption says the run was made on
        folder.summary.write_text(json.dumps(summary))
    elif how == "summary-removed":
        folder.summary.unlink()
    elif how == "missing-config":
        folder.config.unlink()
    elif how == "edited-config":  # lr changed by hand: the numbers are not that config's
        cfg = folder.read_config()
        cfg["optimizer"]["lr"] = 0.5
        folder.write_config(cfg)
    else:  # pragma: no cover
        raise ValueError(how)


def _sibling(folder: RunDir) -> RunDir:
    """Another finished run of the same store, of the same optimizer: the next seed's."""
    seed = int(folder.name[-1])
    name = f"{folder.name[:-1]}{(seed + 1) % 3}"
    other = RunDir(folder.path.parent / name)
    assert run_state(other).status == Status.FINISHED, name
    return other


def _column(lines: list[str], name: str) -> int:
    return lines[0].strip().split(",").index(name)


DAMAGES = {
    "cut-row": "metrics.csv is cut short (its last row has no line end)",
    "short-row": "metrics.csv line 3 has 14 of its 16 cells",
    "non-number": "metrics.csv line 2: test_acc '0.7x' is not a number",
    "row-missing": "metrics.csv has 4 of the 5 epochs its summary.json reports",
    "edited-last-cell": "metrics.csv's last row has test_acc 0.99, its summary.json 0.92",
    "incomplete-summary": "summary.json is incomplete (no final test_acc)",
    "unreadable-summary": "summary.json cannot be read (JSONDecodeError)",
    "edited-config": "config.yaml no longer matches run id ",
    "epoch-order": "metrics.csv line 2 is epoch 2, not 1",
    "foreign-summary": "summary.json is the summary of run '",
    "unknown-status": "summary.json holds no known status ('complete')",
    "unwritten-status": "summary.json holds no known status ('broken')",
    "typed-over": "metrics.csv was changed after its run ended (its digest in summary.json does "
    "not match)",
    "summary-edited": "summary.json was changed after its run wrote it (its digest does not match)",
    "summary-removed": "summary.json is missing, beside a metrics.csv with rows (the record is "
    "lost)",
}


@pytest.fixture
def small_store(tmp_path) -> Path:
    """analysis_store's synthetic store (4 optimizers x 3 seeds of the digits CNN)."""
    return write_store(tmp_path / "runs")


def _run(store: Path, optimizer: str, seed: int) -> RunDir:
    (folder,) = [
        p for p in store.iterdir() if f"-{optimizer}-" in p.name and p.name[-2:] == f"s{seed}"
    ]
    return RunDir(folder)


@pytest.mark.parametrize("how", list(DAMAGES))
def test_each_damage_is_broken_with_its_reason_and_read_by_every_reader(how, small_store):
    folder = _run(small_store, "adam", 0)
    before = run_state(folder)
    assert before.status == Status.FINISHED and len(before.metrics) == 5
    assert before.metrics[-1]["test_acc"] == 0.92  # the rows handed on are the file's numbers
    _damage(folder, how)
    state = run_state(folder)
    assert state.status == Status.BROKEN
    assert state.problem.startswith(DAMAGES[how]), state.problem
    said = []
    store = load_store(small_store, report=said.append)
    broken = [line for line in said if line.startswith("broken run ")]
    assert broken == [f"broken run {folder.path}: {state.problem}; counted as unfinished"]
    (run,) = [r for r in store if r.run_id == folder.name]
    assert run.status == Status.BROKEN and run.metrics.empty  # never averaged
    # a broken run never splits a variant: one Adam variant, whatever the damage
    assert len({r.variant for r in store if r.key()[3] == "adam"}) == 1


def test_the_seal_reads_summaries_from_before_it_and_read_summary_refuses_a_changed_one(
    small_store,
):
    folder = _run(small_store, "adam", 0)
    sealed = json.loads(folder.summary.read_text())
    assert set(sealed["digest"]) == {"config.yaml", "metrics.csv", "steps.csv", "summary"}
    assert sealed["digest"]["steps.csv"] is None  # no steps.csv in this run: must stay absent
    assert folder.read_summary() == sealed
    # a summary written before summaries were sealed: every other check, as before
    old = {k: v for k, v in sealed.items() if k != "digest"}
    folder.summary.write_text(json.dumps(old))
    assert run_state(folder).status == Status.FINISHED and folder.read_summary() == old
    _damage(folder, "typed-over")
    assert run_state(folder).status == Status.FINISHED  # what the seal is for
    # sealed again, then edited: the store's summary reader reads it as absent
    folder.write_summary(old)
    assert run_state(folder).status == Status.FINISHED
    _damage(folder, "summary-edited")
    assert folder.read_summary() is None
    # a file the run never wrote, added after it ended
    folder.write_summary(old)
    folder.steps.write_text("step,loss\n1,0.5\n")
    assert run_state(folder).problem == (
        "steps.csv was not there when its run ended (summary.json's digest)"
    )


def test_a_run_without_its_config_is_broken_left_out_and_named(small_store):
    folder = _run(small_store, "adam", 0)
    _damage(folder, "missing-config")
    state = run_state(folder)
    assert (state.status, state.problem) == (Status.BROKEN, "config.yaml is missing")
    said, left_out = [], []
    store = load_store(small_store, report=said.append, left_out=left_out)
    # it cannot say where it belongs: left out of every selection, and said so
    assert [line for line in said if line.startswith("broken run ")] == [
        f"broken run {folder.path}: config.yaml is missing or unreadable; left out"
    ]
    assert left_out == [f"{folder.name} (config.yaml is missing or unreadable)"]
    assert folder.name not in {r.run_id for r in store} and len(store) == 10


def test_a_resumed_run_is_rewritten_whole_and_status_sees_every_state(small_store):
    # non-terminal runs: parsed too, but not held to the summary's epoch count
    running = _run(small_store, "adabelief", 1)
    assert run_state(running).status == Status.INTERRUPTED  # nobody holds its lock
    _damage(running, "cut-row")
    assert run_state(running).problem.startswith("metrics.csv is cut short")
    with running.locked():  # its own process rewrites it: running, not broken
        assert run_state(running).status == Status.RUNNING


# ---------------------------------------------- published numbers: refused, or named, never silent
@pytest.mark.parametrize(
    "how",
    ["cut-row", "unreadable-summary", "edited-config", "epoch-order", "foreign-summary"]
    + ["unknown-status", "typed-over", "summary-edited", "summary-removed"],
)
def test_breaking_one_run_changes_no_published_number_without_exit_or_note(
    how, small_store, tmp_path, capsys
):
    out = tmp_path / "tables"
    argv = ["--results", str(small_store), "--out", str(out), "--experiment", EXPERIMENT]
    assert tables_tool.main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    table_before = pd.read_csv(out / f"{EXPERIMENT}.csv").set_index("optimizer")
    folder = _run(small_store, "drsom", 2)  # final test acc 0.97 of 0.95, 0.96, 0.97
    _damage(folder, how)
    capsys.readouterr()

    assert tables_tool.main(argv) == 2  # refused: every table as it was
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: 1 broken run(s) in the selection ({folder.name}): ")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    assert tables_tool.main([*argv, "--allow-broken"]) == 0
    table = pd.read_csv(out / f"{EXPERIMENT}.csv").set_index("optimizer")
    drsom = table.loc["drsom"]
    assert (drsom["seeds"], drsom["runs"], drsom["unfinished"]) == (2, 3, 1)  # the count shows it
    assert drsom["final_test_acc_mean"] == pytest.approx((0.95 + 0.96) / 2)
    # every other variant's numbers are exactly what they were
    others = table.drop(index="drsom")
    pd.testing.assert_frame_equal(others, table_before.drop(index="drsom"))
    text = (out / f"{EXPERIMENT}.md").read_text()
    assert f"Left out, broken (1): {folder.name}: {DAMAGES[how]}" in text
    assert "| CNN | DRSOM | 2/3 | 0 | 1 | 0 |" in text
    assert "paired by seed" in text  # the comparison its good seeds support stays


def test_tables_refuse_a_run_without_its_config_and_name_it_when_told_to_go_on(
    small_store, tmp_path, capsys
):
    out = tmp_path / "tables"
    argv = ["--results", str(small_store), "--out", str(out), "--experiment", EXPERIMENT]
    assert tables_tool.main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    folder = _run(small_store, "drsom", 2)
    _damage(folder, "missing-config")
    capsys.readouterr()

    assert tables_tool.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: 1 broken run(s) in the selection ({folder.name}): ")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    assert tables_tool.main([*argv, "--allow-broken"]) == 0
    drsom = pd.read_csv(out / f"{EXPERIMENT}.csv").set_index("optimizer").loc["drsom"]
    # its grid point is counted missing (the store could not place it), never averaged
    assert (drsom["seeds"], drsom["runs"], drsom["unfinished"], drsom["missing"]) == (2, 3, 0, 1)
    assert drsom["final_test_acc_mean"] == pytest.approx((0.95 + 0.96) / 2)
    text = (out / f"{EXPERIMENT}.md").read_text()
    assert f"not placed: {folder.name} (config.yaml is missing or unreadable)" in text


def test_make_figures_refuses_a_broken_run_and_replaces_nothing(small_store, tmp_path, capsys):
    figures, tables = tmp_path / "figures", tmp_path / "tables"
    figures.mkdir()
    (figures / "published.png").write_bytes(b"old")
    _damage(_run(small_store, "sgd", 1), "non-number")
    argv = ["--results", str(small_store), "--figures", str(figures), "--tables", str(tables)]
    assert figures_tool.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("broken run ") and "test_acc '0.3x' is not a number" in err[0]
    assert (
        err[-1].startswith("error: 1 broken run(s) in the selection (")
        and "nothing replaced" in err[-1]
    )
    assert [p.name for p in figures.iterdir()] == ["published.png"] and not tables.exists()


# ------------------------------------------------------------------------------- selection
def _trials(root: Path, lrs: dict[float, float]) -> dict[float, RunDir]:
    """Finished trials of tune_digits_cnn (Adam), one per lr, with these final val accuracies."""
    cfgs = compose_configs(
        *[["experiment=tune_digits_cnn", "optimizer=adam", f"optimizer.lr={lr}"] for lr in lrs]
    )
    out = {}
    for (lr, val), cfg in zip(lrs.items(), cfgs, strict=True):
        rows = metric_rows("adam", 0, [0.5, 0.8])
        rows[-1]["val_acc"] = val
        out[lr] = write_run(root, cfg, rows, "finished")
    return out


def test_selection_is_all_or_nothing_and_reports_what_the_trials_ran(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "selected"
    trials = _trials(runs, {0.001: 0.80, 0.01: 0.90, 0.1: 0.85})
    stale = out / "optimizer" / "tune_digits_cnn" / "sgd.yaml"  # an earlier selection's
    stale.parent.mkdir(parents=True)
    stale.write_text("lr: 9\n")
    argv = ["--experiment", "tune_digits_cnn", "--results", str(runs), "--out", str(out)]
    assert select_tool.main(argv) == 0
    chosen = yaml.safe_load((out / "optimizer" / "tune_digits_cnn" / "adam.yaml").read_text())
    assert chosen["lr"] == 0.01 and not stale.exists()  # the old selection's config is gone
    md = (out / "tune_digits_cnn.selection.md").read_text()
    # no stored study: the space is the range the trials ran, the budget unknown, said plainly
    assert "| unknown | 3/3 (0) | optimizer.lr ran 0.001..0.1 (3 trials; no stored study) |" in md
    written = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # the winner one row short: named, and nothing of the selection changes
    _damage(trials[0.01], "row-missing")
    capsys.readouterr()
    assert select_tool.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"broken run {trials[0.01].path}: metrics.csv has 1 of the 2")
    assert err[-1].startswith("error: 1 of the 3 trials of tune_digits_cnn are broken (")
    assert err[-1].endswith(f"the selection in {out} is left as it was")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == written
    # told to go on: the best readable trial, the broken one counted
    assert select_tool.main([*argv, "--allow-broken"]) == 0
    chosen = yaml.safe_load((out / "optimizer" / "tune_digits_cnn" / "adam.yaml").read_text())
    assert chosen["lr"] == 0.1
    assert (
        "| 2/3 (0, 1 broken and left out) |" in (out / "tune_digits_cnn.selection.md").read_text()
    )

    # an optimizer none of whose trials finished: no selection at all
    sgd = compose_config("experiment=tune_digits_cnn", "optimizer=sgd")
    write_run(runs, sgd, metric_rows("sgd", 0, [0.5]), "interrupted")
    written = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert select_tool.main([*argv, "--allow-broken"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: no trial of sgd on digits/cnn finished (1 interrupted)")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == written


def test_an_unwritable_selection_folder_is_one_line(tmp_path, capsys):
    runs = tmp_path / "runs"
    _trials(runs, {0.001: 0.8})
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "selected"  # below a file: no folder can be made there
    argv = ["--experiment", "tune_digits_cnn", "--results", str(runs), "--out", str(out)]
    assert select_tool.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot write the selection into {out}: ")


# --------------------------------------------------------------------------------- inputs
def test_a_float_val_size_is_a_fraction_and_nothing_else():
    assert validation_count(0.1, 1347) == 135 and validation_count(1, 1347) == 1
    for bad in (1.0, 2.0, 0.0, 1.5):
        with pytest.raises(ValueError, match=rf"got {bad} \(a float is a fraction"):
            validation_count(bad, 1347)
    with pytest.raises(ValueError) as err:
        validation_count(1.0, 1347)
    assert str(err.value) == (
        "data.val_size must be an integer count >= 0 or a fraction in (0, 1), got 1.0 "
        "(a float is a fraction; a count is an integer: 1)"
    )


def test_results_dir_that_cannot_hold_runs_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    cases = {
        "": "results_dir='' is not a folder name",
        "afile": "results_dir=afile is a file",
        "afile/runs": f"results_dir=afile/runs lies below the file {tmp_path / 'afile'}",
        "loop1": "results_dir=loop1 cannot be used as a folder",
    }
    for value, line in cases.items():
        with pytest.raises(ConfigError) as err:
            check_results_dir(value, tmp_path)
        assert str(err.value).startswith(line) and "\n" not in str(err.value)
    assert check_results_dir("new/runs", tmp_path) == tmp_path / "new" / "runs"


def test_a_run_refused_inside_its_folder_leaves_no_folder(cifar_root, tmp_path):
    results = tmp_path / "runs" / "deeper"
    args = tiny(cifar_root, results, "optimizer=sgd", "+model.num_classes=3")
    with pytest.raises(ConfigError, match="model.num_classes=3 but the dataset has 10 classes"):
        run_inprocess(args)
    assert list(tmp_path.iterdir()) == []  # neither the run's folder nor results_dir's
    # an existing results_dir stays, with the other runs in it
    (tmp_path / "runs" / "other").mkdir(parents=True)
    with pytest.raises(ConfigError):
        run_inprocess(tiny(cifar_root, tmp_path / "runs", "optimizer=sgd", "+model.num_classes=3"))
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["other"]
    shutil.rmtree(tmp_path / "runs")
