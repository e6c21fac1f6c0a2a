"""Provenance of runs: which code (commit, dirty edits) and machine facts made them."""

from __future__ import annotations

import subprocess

import pytest

from drsom import summary
from drsom.results import Run, provenance


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
    monkeypatch.setattr(summary, "PACKAGE_DIR", tmp_path / "drsom")
    return tmp_path


def test_dirty_means_edited_code_and_the_diff_hash_names_the_edit(checkout):
    clean = summary.git_state()
    assert len(clean["git_commit"]) == 40 and clean["git_dirty"] is False
    (checkout / "results" / "runs" / "r").mkdir(parents=True)  # the store's own files
    (checkout / "results" / "runs" / "r" / "metrics.csv").write_text("epoch\n1\n")
    assert summary.git_state()["git_dirty"] is False
    (checkout / "drsom" / "a.py").write_text("x = 2\n")
    first = summary.git_state()
    assert first["git_dirty"] is True and len(first["git_diff_sha"]) == 12
    assert summary.git_state()["git_diff_sha"] == first["git_diff_sha"]  # same edit, same hash
    (checkout / "drsom" / "a.py").write_text("x = 3\n")
    assert summary.git_state()["git_diff_sha"] != first["git_diff_sha"]
    (checkout / "drsom" / "a.py").write_text("x = 1\n")
    (checkout / "drsom" / "new.py").write_text("y = 1\n")  # a new module is an edit too
    assert summary.git_state()["git_dirty"] is True


def test_threads_and_versions_are_recorded():
    facts = summary.execution()
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
