"""drsom tables (drsom/tools/tables.py, drsom/analysis/table_files.py): Markdown and CSV,
variants, broken runs."""

from __future__ import annotations

import pandas as pd
import pytest
from analysis_store import EXPERIMENT, merged_store, metric_rows, write_run, write_weights
from run_helpers import compose_configs

from drsom.store.folder import write_csv
from drsom.tools import tables as tables_tool
from drsom.training.loop import METRIC_COLUMNS


def test_summarize_writes_markdown_and_csv(store, tmp_path):
    out = tmp_path / "tables"
    assert (
        tables_tool.main(["--results", str(store), "--out", str(out), "--targets", "90", "0.93"])
        == 0
    )
    table = pd.read_csv(out / f"{EXPERIMENT}.csv").set_index("optimizer")
    assert table.loc["drsom", "seconds_to_90_mean"] == pytest.approx(83 / 3)
    runs = pd.read_csv(out / f"{EXPERIMENT}.runs.csv")
    assert sorted(runs["status"].value_counts().items()) == [
        ("diverged", 1),
        ("finished", 9),
        ("interrupted", 1),  # its summary says running, but no process holds its lock
        ("missing", 1),
    ]
    text = (out / f"{EXPERIMENT}.md").read_text()
    assert "digits (sklearn), CNN, 3 seeds, CPU" in text  # no fingerprint: no image count


def test_two_learning_rates_are_two_rows_labelled_by_lr_never_one_mean(lr_sweep, tmp_path):
    assert tables_tool.main(["--results", str(lr_sweep), "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "default.csv", keep_default_na=False)
    adam = table[table["optimizer"] == "adam"].set_index("setting")
    assert sorted(adam.index) == ["lr=0.001", "lr=0.01"]
    assert adam.loc["lr=0.001", "final_test_acc_mean"] == pytest.approx(0.97)
    assert adam.loc["lr=0.01", "final_test_acc_mean"] == pytest.approx(0.30)
    assert set(adam["seeds"]) == {1}
    # the SGD run is alone of its label on its data: no setting to name
    assert table.loc[table["optimizer"] == "sgd", "setting"].tolist() == [""]
    text = (tmp_path / "default.md").read_text()
    # two datasets: a data column; names as the configs display them
    assert "| digits (sklearn) | CNN | Adam lr=0.001 | 1/1 |" in text
    assert "| digits (sklearn) | CNN | Adam lr=0.01 | 1/1 |" in text


def test_an_empty_selection_says_what_the_store_holds(lr_sweep, tmp_path, capsys):
    args = ["--results", str(lr_sweep), "--out", str(tmp_path), "--experiment", "nothing"]
    assert tables_tool.main(args) == 0
    out = capsys.readouterr().out
    assert "nothing: no runs in" in out
    assert "the store holds default (3 runs); select one with --experiment NAME" in out


def test_broken_runs_are_reported_one_line_each_and_never_averaged(tmp_path, capsys):
    cfgs = compose_configs(
        *[["data=digits", "model=cnn", "optimizer=adam", f"seed={s}"] for s in (0, 1, 2, 3)]
    )
    folders = [
        write_run(tmp_path, c, metric_rows("adam", c["seed"], [0.5, 0.8, 0.9]), "finished")
        for c in cfgs
    ]
    # seed 1: metrics.csv cut to 1 of its 3 epochs; seed 2: summary.json unreadable;
    # seed 3: a config of an older format (no optimizer section)
    write_csv(folders[1].metrics, METRIC_COLUMNS, metric_rows("adam", 1, [0.1]))
    folders[2].summary.write_text("{not json")
    folders[3].write_config({k: v for k, v in cfgs[3].items() if k != "optimizer"})
    out = tmp_path / "tables"
    # published numbers never change silently: without --allow-broken, no table at all
    assert tables_tool.main(["--results", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("error: 3 broken run(s) in the selection (") and not out.exists()
    argv = ["--results", str(tmp_path), "--out", str(out), "--allow-broken"]
    assert tables_tool.main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    # besides them, the line saying the model has no cost weights beside this scratch store
    # (whether it has depends on what other tests left beside tmp_path: not this test's question)
    broken = [line for line in err if line.startswith("broken run ")]
    assert len(broken) == 3 and all(line.startswith("no cost weights") for line in err[3:])
    said = {line.split(": ", 1)[0].rsplit("-", 1)[-1]: line for line in broken}  # by seed
    assert "metrics.csv has 1 of the 3 epochs its summary.json reports" in said["s1"]
    assert "summary.json cannot be read" in said["s2"] and "counted as unfinished" in said["s2"]
    assert "config.yaml is of another format" in said["s3"] and "left out" in said["s3"]
    table = pd.read_csv(out / "default.csv").iloc[0]
    assert (table["seeds"], table["runs"], table["unfinished"]) == (1, 3, 2)
    assert table["final_test_acc_mean"] == pytest.approx(0.9)  # seed 0 alone, not seed 1's 0.1
    # the table names what it left out, with why
    text = (out / "default.md").read_text()
    assert "Left out, broken (2): " in text and f"{folders[2].name}: summary.json" in text
    assert f"not placed: {folders[3].name} (config.yaml is of another format" in text
    # nothing readable at all: exit 2
    folders[0].summary.write_text("[1]")
    assert tables_tool.main(argv) == 2


# ------------------------------------------------ intervals, paired comparison, LaTeX, targets
def _store_of_two_optimizers(root):
    """Three seeds of Adam and DRSOM on the digits CNN with known final accuracies."""
    import pandas as pd

    from drsom.cfg.compose import suite_config
    from drsom.store.folder import RunDir
    from drsom.store.identity import complete, run_id

    write_weights(root.parent / "cost_weights.json")
    finals = {"adam": [0.90, 0.92, 0.94], "drsom": [0.91, 0.95, 0.96]}
    for label, accs in finals.items():
        for seed, acc in enumerate(accs):
            cfg = complete(
                suite_config(
                    [
                        f"optimizer={label}",
                        "data=digits",
                        "model=cnn",
                        f"seed={seed}",
                        "trainer.epochs=2",
                    ]
                )
            )
            folder = RunDir(root / run_id(cfg))
            folder.write_config(cfg)
            pd.DataFrame(
                {
                    "epoch": [1, 2],
                    "train_acc": [0.5, 0.8],
                    "test_acc": [0.5, acc],
                    "train_loss": [1.0, 0.5],
                    "test_loss": [1.0, 0.5],
                    "train_seconds": [1.0, 2.0],
                    "grad": [10, 20],
                    "hvp": [0, 0],
                }
            ).to_csv(folder.metrics, index=False)
            final = {"train_acc": 0.8, "test_acc": acc, "train_loss": 0.5, "test_loss": 0.5}
            summary = {"run_id": folder.name, "status": "finished", "epoch": 2, "final": final}
            folder.write_summary(summary)


def test_tables_carry_intervals_a_paired_comparison_and_latex(tmp_path):
    from drsom.tools import tables as tables_tool

    _store_of_two_optimizers(tmp_path / "runs")
    out = tmp_path / "tables"
    assert tables_tool.main(["--results", str(tmp_path / "runs"), "--out", str(out)]) == 0
    text = (out / "default.md").read_text()
    # Adam: mean 92, s = 2, half-width t(0.975, 2) * 2 / sqrt(3) = 4.303 * 1.1547 = 4.97
    assert "| CNN | Adam | 3/3 | 92.00 [87.03, 96.97] |" in text
    # DRSOM - Adam per seed: +1, +3, +2 -> mean 2, s = 1, half-width 4.303 / sqrt(3) = 2.48
    assert "| CNN | DRSOM | +2.00 [-0.48, +4.48] | 3 |" in text
    tex = (out / "default.tex").read_text()
    assert "\\toprule" in tex and "92.00 [87.03, 96.97]" in tex


@pytest.mark.parametrize("bad", ["0", "100", "-5", "nan"])
def test_tables_refuse_targets_outside_the_accuracy_range(tmp_path, bad, capsys):
    from drsom.tools import tables as tables_tool

    _store_of_two_optimizers(tmp_path / "runs")
    args = ["--results", str(tmp_path / "runs"), "--out", str(tmp_path / "t"), "--targets", bad]
    assert tables_tool.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --targets:") and "\n" not in err
    assert not (tmp_path / "t").exists()


def test_an_experiments_declared_targets_are_its_columns_and_others_keep_the_default(
    store, lr_sweep, tmp_path
):
    import json

    both = merged_store(tmp_path / "results", store, lr_sweep)
    # declared beside the store (the default place), as percent and as a fraction
    (both.parent / "targets.json").write_text(json.dumps({EXPERIMENT: [50, 0.95]}))
    out = tmp_path / "tables"
    assert tables_tool.main(["--results", str(both), "--out", str(out)]) == 0
    table = pd.read_csv(out / f"{EXPERIMENT}.csv").set_index("optimizer")
    assert "epochs_to_90_mean" not in table.columns
    # seed 0: 0.50 at epoch 1, seed 1: 0.60 at 1, seed 2: 0.55 at 1; 95% at epochs 5, 5, 4
    assert table.loc["drsom", "epochs_to_50_mean"] == pytest.approx(1.0)
    assert table.loc["drsom", "epochs_to_95_mean"] == pytest.approx(14 / 3)
    assert "epochs to 95%" in (out / f"{EXPERIMENT}.md").read_text()
    adhoc = pd.read_csv(out / "default.csv")  # no entry: the default targets
    assert {"epochs_to_90_mean", "epochs_to_93_mean"} <= set(adhoc.columns)
    assert "epochs_to_50_mean" not in adhoc.columns
    # targets given on the command line apply to every experiment
    assert tables_tool.main(["--results", str(both), "--out", str(out), "--targets", "80"]) == 0
    assert "epochs_to_80_mean" in pd.read_csv(out / f"{EXPERIMENT}.csv").columns


@pytest.mark.parametrize(
    "text, why",
    [
        ('{"x": [150]}', "--targets: 150 is not a target accuracy"),
        ('{"x": []}', "expected {experiment: [target, ...]}"),
        ("[0.9]", "expected {experiment: [target, ...]}"),
        ("{not json", "Expecting property name"),
    ],
    ids=["out-of-range", "empty", "not-an-object", "not-json"],
)
def test_a_targets_file_that_is_not_one_is_one_line_and_nothing_written(
    store, tmp_path, capsys, text, why
):
    bad = tmp_path / "targets.json"
    bad.write_text(text)
    out = tmp_path / "tables"
    args = ["--results", str(store), "--out", str(out), "--targets-file", str(bad)]
    assert tables_tool.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: targets {bad}: {why}"), lines
    assert not out.exists()
