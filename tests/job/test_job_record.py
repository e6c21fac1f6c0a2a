"""Provenance of runs (drsom.job.record): the code (commit, dirty edits), data and machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from drsom.analysis.captions import provenance
from drsom.analysis.runs import Run
from drsom.job import record as run_record
from drsom.tools import reproduce

REPO = Path(__file__).resolve().parents[2]
AUTHOR = ["-c", "user.email=t@t", "-c", "user.name=t"]


def _git(repo, *args) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    return done.stdout.decode().strip()


@pytest.fixture
def checkout(tmp_path):
    """A git checkout laid out like this one: drsom/ (code) and results/ (the store)."""
    (tmp_path / "drsom").mkdir()
    (tmp_path / "drsom" / "a.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, *AUTHOR, "add", ".")
    _git(tmp_path, *AUTHOR, "commit", "-qm", "c")
    return tmp_path


def test_dirty_means_edited_code_and_the_diff_hash_names_the_edit(checkout):
    clean = run_record.git_state(checkout)
    assert len(clean["git_commit"]) == 40 and clean["git_dirty"] is False
    assert clean["code_origin"] == "git checkout"
    (checkout / "results" / "runs" / "r").mkdir(parents=True)  # the store's own files
    (checkout / "results" / "runs" / "r" / "metrics.csv").write_text("epoch\n1\n")
    assert run_record.git_state(checkout)["git_dirty"] is False
    (checkout / "drsom" / "a.py").write_text("x = 2\n")
    first = run_record.git_state(checkout)
    assert first["git_dirty"] is True and len(first["git_diff_sha"]) == 12
    assert run_record.git_state(checkout)["git_diff_sha"] == first["git_diff_sha"]  # same edit
    (checkout / "drsom" / "a.py").write_text("x = 3\n")
    assert run_record.git_state(checkout)["git_diff_sha"] != first["git_diff_sha"]
    (checkout / "drsom" / "a.py").write_text("x = 1\n")
    (checkout / "drsom" / "new.py").write_text("y = 1\n")  # a new module is an edit too
    assert run_record.git_state(checkout)["git_dirty"] is True


def test_an_installed_copy_says_it_is_not_a_git_checkout_even_inside_one(checkout, monkeypatch):
    # site-packages of a virtual environment kept inside some checkout: git, asked from there,
    # would answer for the enclosing checkout, whose commit is not the code that ran
    site = checkout / ".venv" / "lib" / "site-packages"
    (site / "drsom").mkdir(parents=True)
    unknown = {"git_commit": None, "git_dirty": None, "git_diff_sha": None}
    assert run_record.git_state(site) == unknown | {"code_origin": "not a git checkout"}
    # nor does an environment that points git elsewhere change the answer
    monkeypatch.setenv("GIT_DIR", str(checkout / ".git"))
    assert run_record.git_state(site)["code_origin"] == "not a git checkout"
    monkeypatch.setenv("PATH", str(checkout / "no-git-here"))
    assert run_record.git_state(checkout) == unknown | {"code_origin": "git is not installed"}


# ------------------------------------------- the checkout the package itself lives in
@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A clean git clone of this repository whose code is the code under test: the clone of HEAD,
    with this working tree's code copied over and committed where they differ (a tree being
    edited), so that what a subprocess imports from it is this code."""
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout")
    target = tmp_path_factory.mktemp("clone") / "repo"
    _git(REPO, "clone", "-q", str(REPO), str(target))
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "local")
    for name in run_record.CODE_PATHS:
        if (REPO / name).is_dir():
            shutil.rmtree(target / name)
            shutil.copytree(REPO / name, target / name, symlinks=True, ignore=skip)
        else:
            shutil.copy2(REPO / name, target / name)
    _git(target, "add", "-A", "--", *run_record.CODE_PATHS)
    if _git(target, "status", "--porcelain"):
        _git(target, *AUTHOR, "commit", "-qm", "the working tree under test")
    return target


def _in_checkout(clone: Path, code: str, *args: str) -> dict:
    """``code`` run by Python in ``clone``, importing drsom from there (PYTHONPATH and cwd: what
    is tested is which checkout the package finds itself in); its last line, as JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env |= {"PYTHONPATH": str(clone), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert Path(out.pop("package")) == clone / "drsom" / "__init__.py"
    return out


RECORD = """
import json, sys, drsom
from drsom.job import record
from drsom.store.folder import RunDir
folder = RunDir(sys.argv[1])
state = record.git_state()
folder.write_summary({**folder.read_summary(), **state})
print(json.dumps({"package": drsom.__file__, **state}))
"""
REPRODUCE = """
import json, sys, drsom
from drsom.job import record
from drsom.store.folder import RunDir
from drsom.store.state import run_state
from drsom.tools import reproduce
text, other = reproduce.provenance(run_state(RunDir(sys.argv[1])).summary)
print(json.dumps({"package": drsom.__file__, "state": record.git_state(), "text": text,
                  "verdict": reproduce.verdict(True, other)}))
"""


def test_a_run_made_in_a_dirty_checkout_is_recorded_dirty_and_reproduce_says_so(clone, tmp_path):
    from analysis_store import metric_rows, write_run
    from run_helpers import compose_config

    commit = _git(clone, "rev-parse", "HEAD")
    cfg = compose_config("data=digits", "model=cnn", "optimizer=adam", "trainer.epochs=2")
    folder = write_run(tmp_path, cfg, metric_rows("adam", 0, [0.5, 0.6]), "finished")
    edited = clone / "drsom" / "models" / "__init__.py"
    original = edited.read_text()
    edited.write_text(original + "# an edit that is not committed\n")
    try:
        made = _in_checkout(clone, RECORD, str(folder.path))
    finally:
        edited.write_text(original)
    assert made["git_dirty"] is True and len(made["git_diff_sha"]) == 12
    assert made["git_commit"] == commit and made["code_origin"] == "git checkout"
    assert json.loads(folder.summary.read_text())["git_dirty"] is True

    # the same checkout, clean again: the rerun's side of drsom-reproduce
    rerun = _in_checkout(clone, REPRODUCE, str(folder.path))
    assert rerun["state"] == {
        "git_commit": commit,
        "git_dirty": False,
        "git_diff_sha": None,
        "code_origin": "git checkout",
    }
    why = "same commit, but the stored run had uncommitted edits that this tree has not"
    assert rerun["text"] == (
        f"stored run made at {commit} (dirty tree, diff {made['git_diff_sha']}); rerun at "
        f"{commit} (NOT the same code: {why})"
    )
    assert rerun["verdict"] == f"reproduced: identical numbers, but NOT from the same code ({why})"


def test_reproduce_calls_code_the_same_only_for_one_commit_with_the_same_edits():
    clean = {"git_commit": "a" * 40, "git_dirty": False, "git_diff_sha": None}
    dirty = {"git_commit": "a" * 40, "git_dirty": True, "git_diff_sha": "0123456789ab"}
    assert reproduce.code_difference(clean, clean) is None
    assert reproduce.code_difference(dirty, dict(dirty)) is None  # the same edits
    assert reproduce.code_difference(dirty, {**dirty, "git_diff_sha": "ba9876543210"}) == (
        "same commit, other uncommitted edits"
    )
    assert reproduce.code_difference(clean, dirty) == (
        "same commit, but this tree has uncommitted edits that the stored run had not"
    )
    assert reproduce.code_difference(clean, {**clean, "git_commit": "b" * 40}) == "OTHER commit"
    installed = {"git_commit": None, "git_dirty": None, "code_origin": "not a git checkout"}
    assert reproduce.code_difference(installed, installed) == (
        "a commit is unknown, so the code cannot be compared"
    )
    assert reproduce.verdict(True, None) == "reproduced: identical"
    assert reproduce.verdict(False, None) == "NOT reproduced: see the differences above"


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
    assert "force=true reruns it" in line and f"drsom-reproduce {folder.path}" in line
    assert json.loads(folder.summary.read_text())["git_commit"] == "0" * 40  # untouched
