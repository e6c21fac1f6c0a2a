"""scripts/bench_optimizers.py --oracle-weights: the weights' arithmetic and the file it merges."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

from drsom.analysis import costs

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_optimizers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_optimizers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_weights_are_medians_relative_to_a_gradient_and_an_hvp_is_what_it_adds(bench, monkeypatch):
    class Fixed:  # seconds per call, with one outlier each that the median ignores
        def __init__(self, args, device):
            self.n = 0

        def forward(self):
            self.n += 1
            return 9.0 if self.n == 4 else 0.04

        def grad(self):
            return 0.1

        def hvp(self):
            return 0.12, (5.0 if self.n == 4 else 0.3)

    monkeypatch.setattr(bench, "Oracles", Fixed)
    args = types.SimpleNamespace(threads=1, device="cpu", warmup=1, repeats=5)
    found = bench.oracle_weights(args)
    assert found["forward"] == pytest.approx(0.4) and found["grad"] == 1.0
    # (gradient with create_graph 0.12 + second backward 0.3 - gradient 0.1) / 0.1
    assert found["hvp"] == pytest.approx(3.2)
    assert found["median_ms"] == pytest.approx(
        {"forward": 40, "grad": 100, "grad_create_graph": 120, "hvp_backward": 300}
    )


@pytest.mark.usefixtures("one_thread")
def test_oracle_weights_are_merged_into_the_file_one_entry_per_model(
    bench, tmp_path, monkeypatch, capsys
):
    path = tmp_path / "cost_weights.json"
    path.write_text(json.dumps({"resnet18": {"forward": 0.3, "grad": 1.0, "hvp": 2.5}}))
    argv = ["--model", "cnn", "--data", "digits", "--batch-size", "4", "--threads", "1"]
    argv += ["--warmup", "1", "--repeats", "3", "--oracle-weights", str(path)]
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
    bench.main()
    saved = json.loads(path.read_text())
    assert saved["resnet18"] == {"forward": 0.3, "grad": 1.0, "hvp": 2.5}  # kept
    cnn = saved["cnn"]
    assert (cnn["grad"], cnn["batch_size"], cnn["data"], cnn["threads"]) == (1.0, 4, "digits", 1)
    assert 0 < cnn["forward"] < 1.5 and cnn["hvp"] > 0
    assert set(cnn["machine"]) == {"cpu", "cpu_capability"} and cnn["device"] == "cpu"
    assert cnn["command"].endswith(f"--oracle-weights {path}") and cnn["measured_at"][:2] == "20"
    assert "| gradient | " in capsys.readouterr().out  # the printed table
    # the analysis reads what the benchmark wrote
    assert costs.load_weights(path)["cnn"].forward == cnn["forward"]
