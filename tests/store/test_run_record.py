"""Provenance of runs (drsom.store.record): the code (commit, dirty edits), data and machine."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from drsom.analysis.runs import Run, provenance
from drsom.store import record as run_record


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git checkout laid out like this one: drsom/ (code) and results/ (the store)."""
    (tmp_path / "drsom").mkdir()
    (tmp_path / "drsom" / "a.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "c")
    monkeypatch.setattr(run_record, "PACKAGE_DIR", tmp_path / "drsom")
    return tmp_path


def test_dirty_means_edited_code_and_the_diff_hash_names_the_edit(checkout):
    clean = run_record.git_state()
    assert len(clean["git_commit"]) == 40 and clean["git_dirty"] is False
    (checkout / "results" / "runs" / "r").mkdir(parents=True)  # the store's own files
    (checkout / "results" / "runs" / "r" / "metrics.csv").write_text("epoch\n1\n")
    assert run_record.git_state()["git_dirty"] is False
    (checkout / "drsom" / "a.py").write_text("x = 2\n")
    first = run_record.git_state()
    assert first["git_dirty"] is True and len(first["git_diff_sha"]) == 12
    assert run_record.git_state()["git_diff_sha"] == first["git_diff_sha"]  # same edit, same hash
    (checkout / "drsom" / "a.py").write_text("x = 3\n")
    assert run_record.git_state()["git_diff_sha"] != first["git_diff_sha"]
    (checkout / "drsom" / "a.py").write_text("x = 1\n")
    (checkout / "drsom" / "new.py").write_text("y = 1\n")  # a new module is an edit too
    assert run_record.git_state()["git_dirty"] is True


def test_threads_and_versions_are_recorded():
    facts = run_record.execution()
    assert isinstance(facts["threads"], int) and facts["threads"] >= 1
    assert facts["versions"]["torch"]


def _run(commit, dirty=False, threads=2, device="cpu"):
    s = {"git_commit": commit, "git_dirty": dirty, "threads": threads, "device": device}
    return Run(run_id=commit, path=None, summary=s | {"versions": {"torch": "2.14.1"}})


def test_captions_name_the_commits_dirty_runs_and_what_differs():
    same = [_run("a" * 40), _run("a" * 40)]
    assert provenance(same) == "code: commit aaaaaaaaaa"
    mixed = [_run("a" * 40), _run("a" * 40, dirty=True), _run("b" * 40, threads=1)]
    assert provenance(mixed) == (
        "code: 2 commits, aaaaaaaaaa (2), bbbbbbbbbb (1); 1 of 3 runs from a dirty tree; "
        "runs differ in CPU threads: 2 (2), 1 (1)"
    )


# ------------------------------------------------------------------------------------ data
def test_a_result_on_other_data_is_refused_not_taken_for_this_run(tmp_path):
    from cifar_fixture import write_fake_cifar10
    from run_helpers import only_run, run_inprocess, summary_of, tiny

    from drsom.job.validate import ConfigError

    small = write_fake_cifar10(tmp_path / "small", n_train=160, n_test=40, seed=1)
    full = write_fake_cifar10(tmp_path / "full", n_train=200, n_test=60, seed=2)
    results = tmp_path / "runs"
    args = tiny(small, results, "optimizer=sgd", "trainer.epochs=1")
    assert run_inprocess(args) == "finished"
    read = summary_of(only_run(results))["data_fingerprint"]
    assert read.startswith("128+40:")  # train_subset=128 of 160, all 40 test images
    assert run_inprocess(args) == "finished"  # the same data: skipped, a result
    again = tiny(full, results, "optimizer=sgd", "trainer.epochs=1")  # same config, other files
    with pytest.raises(ConfigError) as err:
        run_inprocess(again)
    text = str(err.value)
    assert "was made on other data (train+test images:hash 128+40:" in text
    assert "(128+60:" in text and "\n" not in text


def test_runs_of_one_config_on_different_data_are_two_variants(tmp_path, capsys):
    from analysis_store import metric_rows, write_run
    from run_helpers import compose_config

    from drsom.analysis.runs import load_store, variant_suffixes

    # seed 2 on other data (issue 21: a folder is named by its config's run id, so the merged
    # store holds three seeds, not a renamed copy of seed 0)
    for seed, read in ((0, "100+20:aaaa"), (1, "100+20:aaaa"), (2, "50+20:bbbb")):
        cfg = compose_config("data=digits", "model=cnn", "optimizer=adam", f"seed={seed}")
        folder = write_run(
            tmp_path / read.replace(":", "_"), cfg, metric_rows("adam", 0, [0.5]), "finished"
        )
        folder.write_summary({**folder.read_summary(), "data_fingerprint": read})
    runs = [r for sub in sorted(tmp_path.iterdir()) for r in load_store(sub)]
    assert len({r.variant for r in runs}) == 1  # each store alone: one variant
    merged = tmp_path / "merged"
    for r in runs:
        shutil.copytree(r.path, merged / r.run_id)
    together = load_store(merged)
    assert (
        "runs of one config on different data (100+20:aaaa, 50+20:bbbb)" in capsys.readouterr().out
    )
    assert len({r.variant for r in together}) == 2
    assert set(variant_suffixes(together).values()) == {
        "data.read=100+20:aaaa",
        "data.read=50+20:bbbb",
    }


def test_rerunning_a_run_made_at_another_commit_says_so_in_one_line(tmp_path, caplog):
    import json
    import logging

    from cifar_fixture import write_fake_cifar10
    from run_helpers import only_run, run_inprocess, tiny

    root = write_fake_cifar10(tmp_path / "cifar", n_train=160, n_test=40)
    args = tiny(root, tmp_path / "runs", "optimizer=sgd", "trainer.epochs=1")
    assert run_inprocess(args) == "finished"
    folder = only_run(tmp_path / "runs")
    stored = json.loads(folder.summary.read_text())
    folder.write_summary({**stored, "git_commit": "0" * 40})  # as a run at that commit wrote it
    with caplog.at_level(logging.INFO, logger="drsom"):
        assert run_inprocess(args) == "finished"  # still a result: not trained again
    (line,) = [r.getMessage() for r in caplog.records if "was made at commit" in r.getMessage()]
    assert line.startswith(f"run {folder.name} was made at commit 0000000000, this code is ")
    assert "force=true reruns it" in line and "scripts/reproduce.py" in line
    assert json.loads(folder.summary.read_text())["git_commit"] == "0" * 40  # untouched
