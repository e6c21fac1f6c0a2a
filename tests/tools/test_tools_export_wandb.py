"""drsom-export-wandb (drsom/tools/export_wandb.py): a wandb project to a store the tables read."""

from __future__ import annotations

import types

import pandas as pd
import pytest
from analysis_store import EXPERIMENT, TEST_ACC, metric_rows
from run_helpers import compose_config

from drsom.analysis.runs import (
    experiment_runs,
    select_runs,
)
from drsom.analysis.tables import experiment_table, run_rows
from drsom.store.folder import RunDir, write_csv
from drsom.store.identity import run_id
from drsom.store.state import FINAL_KEYS
from drsom.tools import export_wandb
from drsom.training.loop import METRIC_COLUMNS
from drsom.training.tracking import flatten


class FakeRun:
    """What wandb.Api().runs() yields: flat config, summary, state, an unsampled history."""

    def __init__(self, cfg, history, summary, state="finished", wandb_id="abc123"):
        rid = run_id(cfg)
        self.id, self.name, self.state = wandb_id, rid, state
        self.config = {**flatten(cfg), "run_id": rid, "compiled": False, "_wandb": {"x": 1}}
        self.summary = {**summary, "_runtime": 12.5}
        self._history = history

    def scan_history(self):
        return iter(self._history)


def wandb_history(optimizer: str, accs: list[float]) -> list[dict]:
    """Epoch rows as the tracker logs them (NaN/None dropped) and DRSOM step rows in between."""
    history = []
    for row in metric_rows(optimizer, 0, accs):
        if optimizer == "drsom":
            history.append(
                {"_step": row["step"] - 1, "step/epoch": row["epoch"], "step/loss": 0.5}
                | {"opt/rho": 0.8, "opt/radius": 0.1, "opt/alpha_0": 0.1, "opt/alpha_1": -0.02}
            )
        history.append({"_step": row["step"], "_runtime": 1.0, **row})
    return history


def test_export_wandb_writes_a_store_the_summarizer_reads(tmp_path):
    grid = ["seed=0", "optimizer=drsom,adam,sgd"]
    cfgs = {
        job[0].split("=")[1]: compose_config(*job) for job, _ in experiment_runs(EXPERIMENT, grid)
    }
    runs = [
        FakeRun(
            cfgs["drsom"], wandb_history("drsom", TEST_ACC["drsom", 0]), {"status": "finished"}
        ),
        FakeRun(cfgs["adam"], wandb_history("adam", [0.7, 0.8]), {}, state="crashed"),
        FakeRun(cfgs["sgd"], wandb_history("sgd", TEST_ACC["sgd", 0]), {"status": "finished"}),
    ]
    calls = []

    def fake_runs(path, filters=None):
        calls.append((path, filters))
        return runs

    out = tmp_path / "runs"
    done = export_wandb.export(
        types.SimpleNamespace(runs=fake_runs), "team/proj", out, experiment=EXPERIMENT
    )
    assert calls == [("team/proj", {"config.experiment": EXPERIMENT})]
    assert [status for _, status in done] == ["finished", "failed", "finished"]

    drsom = RunDir(out / run_id(cfgs["drsom"]))
    config = drsom.read_config()
    assert config == cfgs["drsom"]  # unflattened, without wandb's and the runner's extra keys
    steps = pd.read_csv(drsom.steps)
    assert list(steps) == ["step", "epoch", "loss", "rho", "radius", "alpha_0", "alpha_1"]
    assert steps["alpha_1"].iloc[0] == -0.02 and steps["step"].tolist() == [10, 21, 32, 43, 54]
    summary = drsom.read_summary()
    # drsom seed 0's test accuracy is highest at the end, validation picks epoch 4 (0.94)
    assert summary["selected"] == {"epoch": 4, "val_acc": pytest.approx(0.97), "test_acc": 0.94}
    assert "best_test_acc" not in summary and summary["counts"] == {
        "forward": 110,
        "grad": 55,
        "hvp": 110,
    }
    assert summary["exported_from"] == {"wandb": "team/proj/abc123", "state": "finished"}

    selection = select_runs(out, EXPERIMENT, grid)
    assert not selection.missing and not selection.substituted
    table = experiment_table(run_rows(selection)).set_index("optimizer")
    assert table.loc["drsom", "final_test_acc_mean"] == pytest.approx(0.95)
    # epoch 2: 22 gradients and 44 HVPs (no weights given: no gradient equivalents)
    assert table.loc["drsom", "grad_to_90_mean"] == 22
    assert table.loc["drsom", "hvp_to_90_mean"] == 44
    assert (table.loc["adam", "seeds"], table.loc["adam", "unfinished"]) == (0, 1)
    assert table.loc["sgd", "final_test_acc_mean"] == pytest.approx(0.80)

    # a local run the store's reader finds broken (1 row, its summary says 5 epochs) is not a
    # result: the export replaces it (issue 21: export reads the store through run_state)
    write_csv(drsom.metrics, METRIC_COLUMNS, metric_rows("drsom", 0, [0.99]))
    again = export_wandb.export(types.SimpleNamespace(runs=fake_runs), "team/proj", out)
    assert again[0][1] == "finished" and len(pd.read_csv(drsom.metrics)) == 5
    # a finished local run is the source of truth: kept unless --force
    rows = metric_rows("drsom", 0, [0.99])
    write_csv(drsom.metrics, METRIC_COLUMNS, rows)
    final = {k: rows[-1].get(k) for k in FINAL_KEYS}
    drsom.write_summary({**drsom.read_summary(), "epoch": 1, "final": final})
    again = export_wandb.export(types.SimpleNamespace(runs=fake_runs), "team/proj", out)
    assert again[0][1] == "kept (finished locally)"
    assert len(pd.read_csv(drsom.metrics)) == 1
