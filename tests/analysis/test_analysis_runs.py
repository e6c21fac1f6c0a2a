"""Experiments and results stores (drsom.analysis.runs): expansion, selection, round trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from analysis_store import EXPERIMENT, metric_rows, write_run
from run_helpers import compose_config, compose_configs

from drsom.analysis.runs import (
    experiment_runs,
    load_store,
    select_runs,
)
from drsom.cfg.experiments import experiment_names, study_of
from drsom.store.identity import run_id

REPO = Path(__file__).resolve().parents[2]


def test_experiment_expansion_gives_the_sweeps_run_ids_in_launch_order():
    runs = experiment_runs(EXPERIMENT)
    assert [job[:2] for job, _ in runs] == [
        [f"optimizer={o}", f"seed={s}"]
        for o in ("drsom", "adam", "adabelief", "sgd")
        for s in (0, 1, 2)
    ]
    # the id a plain single run of the same grid point gets, composed independently
    expected = run_id(compose_config(f"experiment={EXPERIMENT}", "optimizer=adam", "seed=1"))
    assert runs[4][1] == expected
    assert expected.startswith("digits-cnn-adam-") and expected.endswith("-s1")
    # seeds share the config hash (the group); optimizers do not
    ids = [rid for _, rid in runs]
    assert len({rid.rsplit("-", 1)[0] for rid in ids}) == 4 and len(set(ids)) == 12


def test_command_line_overrides_narrow_the_grid_as_the_sweeper_does():
    runs = experiment_runs(EXPERIMENT, ["optimizer=sgd,adam", "seed=7"])
    assert [rid.split("-")[2] + rid[-3:] for _, rid in runs] == ["sgd-s7", "adam-s7"]
    # a changed protocol is a different run
    longer = experiment_runs(EXPERIMENT, ["optimizer=sgd", "seed=7", "trainer.epochs=31"])
    assert longer[0][1] != runs[0][1]


SELECTED = [f"hydra.searchpath=[file://{REPO / 'results' / 'selected'}]"]


def test_a_study_shows_the_runs_it_reuses_under_their_own_ids_and_on_its_protocol_only():
    variants = experiment_runs("cifar10_jpeg_variants_cnn", SELECTED)
    ids = [rid for _, rid in variants]
    # its own grid first (what run.py -m launches), then the headline's runs, never re-keyed
    assert [rid.split("-")[2] for rid in ids[:15]] == [
        f"variant_{v}" for v in ("fd", "adabelief", "span_gd", "history", "random") for _ in "sss"
    ]
    assert sorted(ids[15:]) == sorted(
        rid for job, rid in experiment_runs("cifar10_jpeg_cnn", SELECTED)
        if job[0] in ("optimizer=tune_cifar10_jpeg_cnn/drsom_adaptive",
                      "optimizer=tune_cifar10_jpeg_cnn/adam")
    )  # fmt: skip
    assert len(ids) == 21
    # the reused runs keep their ids because `study` is not part of a run's identity
    assert ids[15].startswith("cifar10_jpeg-cnn-drsom_adaptive-47552b32e9-s")
    # a study narrowed to another protocol does not show runs made on the old one
    # the study's paired differences are taken against its own baseline, not Adam
    assert study_of("cifar10_jpeg_variants_cnn")["baseline"] == "drsom_adaptive"
    assert study_of("cifar10_jpeg_cnn") == {"targets": [0.60, 0.65]}  # no reuse, no baseline
    assert study_of("no_such_study") == {}
    with pytest.raises(ValueError, match=r"reuses run cifar10_jpeg-cnn-drsom_adaptive-.*"
                       r"trainer\.epochs is 14 here, 15 there"):  # fmt: skip
        experiment_runs("cifar10_jpeg_variants_cnn", [*SELECTED, "trainer.epochs=14"])


def test_every_experiment_selects_its_model_data_and_name():
    assert {
        "drsom_vs_baselines_resnet18",
        "drsom_variants_resnet18",
        "adabelief_protocol_resnet34",
        "digits_drsom_vs_baselines_cnn",
        "digits_drsom_vs_baselines_resnet18",
        "digits_drsom_variants_cnn",
    } <= set(experiment_names())
    names = experiment_names()
    for name, cfg in zip(
        names, compose_configs(*[[f"experiment={n}"] for n in names]), strict=True
    ):
        assert cfg["experiment"] == name
        model = name.split("_")[-1]
        data = next((d for d in ("digits", "cifar10_jpeg") if d in name), "cifar10")
        assert (cfg["model"]["name"], cfg["data"]["name"]) == (model, data), name
    plain = compose_config()
    assert plain["experiment"] == "default" and plain["model"]["name"] == "resnet18"


def test_experiment_is_found_from_any_working_directory_and_typos_are_refused(tmp_path):
    cmd = [sys.executable, str(REPO / "run.py"), f"experiment={EXPERIMENT}", "--cfg", "job"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"experiment: {EXPERIMENT}" in out.stdout and "epochs: 30" in out.stdout
    cmd[2] = "experiment=no_such_figure"
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Could not find 'experiment/no_such_figure'" in out.stderr


def test_a_run_made_under_an_older_config_is_used_and_not_silently_lost(store, tmp_path):
    root = tmp_path / "runs"
    cfg = compose_config(f"experiment={EXPERIMENT}", "optimizer=sgd", "seed=0")
    cfg["trainer"]["an_old_key"] = 1  # changes the hash, as adding a config key would
    write_run(root, cfg, metric_rows("sgd", 0, [0.4, 0.5]), "finished")
    selection = select_runs(root, EXPERIMENT)
    assert [r.key()[3:] for r in selection.runs] == [("sgd", 0)]
    assert len(selection.missing) == 11 and len(selection.substituted) == 1


def test_store_round_trip_reads_every_run_folder(store):
    runs = load_store(store)
    assert len(runs) == 11 and {r.status for r in runs} == {"finished", "diverged", "interrupted"}
