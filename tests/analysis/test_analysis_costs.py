"""Gradient equivalents (drsom.analysis.costs), the wall-clock note and the load record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from analysis_store import write_weights

from drsom.analysis import costs
from drsom.analysis.captions import wall_clock_note
from drsom.analysis.runs import Run
from drsom.job import record as run_record


def test_weights_are_read_per_model_and_say_where_they_were_measured(tmp_path):
    path = write_weights(tmp_path / "w.json", models=("cnn", "resnet18"))
    weights = costs.load_weights(path)
    assert weights["cnn"] == costs.Weights(
        0.5, 2.0, "batch 128, Test CPU (AVX2), 2 threads, 2026-01-02", "Test CPU (AVX2)"
    )
    note = costs.weights_note(weights, ["cnn"])
    assert note == (
        "gradient equivalents = grad + 0.50 x extra forwards + 2.00 x HVPs (cnn, measured: "
        "batch 128, Test CPU (AVX2), 2 threads, 2026-01-02)"
    )
    # runs made on another machine than the weights' say so
    other = costs.weights_note(weights, ["cnn"], ["Test CPU (AVX2)", "EPYC (AVX512)"])
    assert other.endswith("2026-01-02; the runs ran on EPYC (AVX512))")
    assert costs.weights_note(weights, ["cnn"], ["Test CPU (AVX2)"]) == note
    assert costs.default_path(tmp_path / "runs") == tmp_path / "cost_weights.json"
    assert costs.load_weights(tmp_path / "absent.json") == {}


def test_a_model_without_weights_is_one_line_with_the_command_that_measures_it(tmp_path):
    path = write_weights(tmp_path / "w.json")
    with pytest.raises(ValueError) as err:
        costs.weights_for(costs.load_weights(path), ["cnn", "resnet34"], path)
    line = str(err.value)
    assert "\n" not in line and "'resnet34'" in line
    assert "scripts/bench_optimizers.py --model resnet34" in line and str(path) in line
    (tmp_path / "bad.json").write_text(json.dumps({"cnn": {"forward": -1, "hvp": 2}}))
    with pytest.raises(ValueError, match="not a weights file"):
        costs.load_weights(tmp_path / "bad.json")


def _run(summary: dict) -> Run:
    base = {"device": "cpu", "threads": 2, "machine": {"cpu": "EPYC", "cpu_capability": "AVX2"}}
    return Run("r", Path("."), {}, base | summary)


def test_wall_clock_note_names_the_machine_and_whether_it_was_shared():
    alone = _run({"load_max": {"load_1min": 2.4, "cores": 2}})  # its own 2 threads
    busy = _run({"load_max": {"load_1min": 3.7, "cores": 2}})
    unknown = _run({})
    assert wall_clock_note([alone, alone]) == "wall clock: EPYC (AVX2), 2 threads; alone"
    assert wall_clock_note([alone, busy]) == (
        "wall clock: EPYC (AVX2), 2 threads; shared (load up to 3.7 on 2 cores, 1 of 2 runs)"
    )
    assert wall_clock_note([unknown]).endswith("; unknown whether shared (no load record)")
    gpu = Run("g", Path("."), {}, {"device": "cuda:0", "device_name": "NVIDIA H200"})
    gpu.summary["load_max"] = {"load_1min": 1.2, "cores": 16}
    assert wall_clock_note([gpu]) == "wall clock: NVIDIA H200; alone"


def test_the_summary_keeps_the_highest_load_seen(monkeypatch):
    loads = iter([1.5, 3.25, 0.5])
    monkeypatch.setattr(run_record.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    monkeypatch.setattr(run_record.os, "cpu_count", lambda: 2)
    summary: dict = {}
    for _ in range(3):
        run_record.note_load(summary)
    assert summary["load_max"] == {"load_1min": 3.25, "cores": 2}


def test_the_shipped_weights_cover_the_shipped_runs_model():
    shipped = Path(__file__).resolve().parents[2] / "results" / costs.WEIGHTS_FILE
    weights = costs.load_weights(shipped)
    assert {"cnn", "resnet18"} <= set(weights)
    assert 0 < weights["cnn"].forward < 1 < weights["cnn"].hvp
