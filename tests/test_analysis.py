"""Figures and tables from a results store with known values; experiments; the wandb export.

The synthetic store is the grid of ``digits_drsom_vs_baselines_cnn`` (4 optimizers x 3 seeds,
real composed configs, so the run ids are the ones a sweep writes) with hand-made metrics:

* drsom: 3 finished seeds, final test acc 0.95 / 0.96 / 0.97, reaching 90% at epochs 2, 3, 3;
* adam: 2 finished (final 0.92, 0.94; only one ever reaches 93%) and 1 diverged in epoch 3;
* adabelief: 1 finished, 1 still running after 2 epochs, 1 never started (no folder);
* sgd: 3 finished, never reaching 90%.
"""

from __future__ import annotations

import math
import subprocess
import sys
import types
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from run_helpers import compose_config, compose_configs

from drsom.analysis import figures
from drsom.analysis.runs import (
    Run,
    experiment_names,
    experiment_runs,
    load_reference,
    load_store,
    metrics_frame,
    select_runs,
)
from drsom.analysis.tables import experiment_table, markdown, run_rows, time_to_target
from drsom.identity import run_id
from drsom.run_folder import RunDir, write_csv
from drsom.tools import build_figures, export_wandb, make_tables, plot_curves
from drsom.tracking import flatten
from drsom.train import METRIC_COLUMNS

REPO = Path(__file__).resolve().parents[1]

EXPERIMENT = "digits_drsom_vs_baselines_cnn"

# test accuracy per epoch of each (optimizer, seed); None: the run folder does not exist
TEST_ACC = {
    ("drsom", 0): [0.50, 0.91, 0.92, 0.94, 0.95],
    ("drsom", 1): [0.60, 0.85, 0.92, 0.93, 0.96],
    ("drsom", 2): [0.55, 0.89, 0.90, 0.95, 0.97],
    ("adam", 0): [0.70, 0.80, 0.85, 0.90, 0.92],
    ("adam", 1): [0.70, 0.80, 0.85, 0.90, 0.94],
    ("adam", 2): [0.70, 0.80],  # diverged in epoch 3
    ("adabelief", 0): [0.80, 0.85, 0.88, 0.92, 0.93],
    ("adabelief", 1): [0.80, 0.86],  # still running
    ("adabelief", 2): None,
    ("sgd", 0): [0.30, 0.50, 0.60, 0.70, 0.80],
    ("sgd", 1): [0.30, 0.50, 0.60, 0.70, 0.82],
    ("sgd", 2): [0.30, 0.50, 0.60, 0.70, 0.84],
}
STATUS = {("adam", 2): "diverged", ("adabelief", 1): "running"}


def metric_rows(optimizer: str, seed: int, accs: list[float]) -> list[dict]:
    """Rows with known costs: 10 s + seed per epoch, 11 gradients and (DRSOM) 22 HVPs per epoch."""
    rows = []
    for i, acc in enumerate(accs):
        e = i + 1
        rows.append(
            {
                "epoch": e,
                "step": 11 * e,
                "train_loss": 1.0 / e,
                "train_acc": acc - 0.05,
                "test_loss": 1.2 / e,
                "test_acc": acc,
                "lr": 0.1,
                "train_seconds": 10.0 * e + seed,
                "total_seconds": 12.0 * e + seed,
                "forward": 22 * e,
                "grad": 11 * e,
                "hvp": 22 * e if optimizer == "drsom" else 0,
            }
        )
    return rows


def write_run(root: Path, cfg: dict, rows: list[dict], status: str) -> RunDir:
    folder = RunDir(root / run_id(cfg))
    folder.write_config(cfg)
    write_csv(folder.metrics, METRIC_COLUMNS, rows)
    summary = {"run_id": folder.name, "status": status, "device": "cpu", "epoch": len(rows)}
    folder.write_summary(summary)
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    points = [key for key, accs in TEST_ACC.items() if accs is not None]
    jobs = [[f"experiment={EXPERIMENT}", f"optimizer={o}", f"seed={s}"] for o, s in points]
    for (optimizer, seed), cfg in zip(points, compose_configs(*jobs), strict=True):
        status = STATUS.get((optimizer, seed), "finished")
        write_run(root, cfg, metric_rows(optimizer, seed, TEST_ACC[optimizer, seed]), status)
    return root


@pytest.fixture(scope="module")
def selection(store):
    return select_runs(store, EXPERIMENT)


@pytest.fixture(scope="module")
def table(selection) -> pd.DataFrame:
    return experiment_table(run_rows(selection)).set_index("optimizer")


# ---------------------------------------------------------------------------- experiments
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
        model, data = name.split("_")[-1], "digits" if name.startswith("digits") else "cifar10"
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


# --------------------------------------------------------------------------------- tables
def test_table_has_the_known_means_stds_and_counts(table):
    drsom = table.loc["drsom"]
    assert (drsom["seeds"], drsom["diverged"], drsom["unfinished"], drsom["missing"]) == (
        3,
        0,
        0,
        0,
    )
    assert drsom["final_test_acc_mean"] == pytest.approx(0.96)
    assert drsom["final_test_acc_std"] == pytest.approx(0.01)  # sample std of .95 .96 .97
    assert drsom["best_test_acc_mean"] == pytest.approx(0.96)
    assert drsom["final_train_acc_mean"] == pytest.approx(0.91)

    adam = table.loc["adam"]
    assert (adam["seeds"], adam["diverged"], adam["unfinished"], adam["missing"]) == (2, 1, 0, 0)
    assert adam["final_test_acc_mean"] == pytest.approx(0.93)
    assert adam["final_test_acc_std"] == pytest.approx(0.01 * math.sqrt(2))

    adabelief = table.loc["adabelief"]
    assert (adabelief["seeds"], adabelief["unfinished"], adabelief["missing"]) == (1, 1, 1)
    assert adabelief["final_test_acc_mean"] == pytest.approx(0.93)
    assert math.isnan(adabelief["final_test_acc_std"])  # one seed: no spread to report
    assert table["runs"].tolist() == [3, 3, 3, 3]


def test_time_to_target_in_epochs_seconds_and_gradient_evaluations(table):
    drsom = table.loc["drsom"]
    # 90% first at epochs 2 (seed 0), 3, 3; seconds 10 e + seed; 11 grads + 22 HVPs per epoch
    assert drsom["reached_90"] == 3
    assert drsom["epochs_to_90_mean"] == pytest.approx(8 / 3)
    assert drsom["epochs_to_90_std"] == pytest.approx(np.std([2, 3, 3], ddof=1))
    assert drsom["seconds_to_90_mean"] == pytest.approx((20 + 31 + 32) / 3)
    assert drsom["grad_evals_to_90_mean"] == pytest.approx((66 + 99 + 99) / 3)
    assert drsom["epochs_to_93_mean"] == pytest.approx((4 + 4 + 4) / 3)
    adam = table.loc["adam"]  # 93% only by seed 1, in epoch 5; the diverged seed is not a seed
    assert (adam["reached_93"], adam["epochs_to_93_mean"]) == (1, 5)
    assert adam["grad_evals_to_93_mean"] == 55  # no HVPs
    assert table.loc["sgd", "reached_90"] == 0 and math.isnan(table.loc["sgd", "epochs_to_90_mean"])


def test_time_to_target_takes_the_first_epoch_at_or_above_it():
    m = pd.DataFrame(metric_rows("adam", 0, [0.5, 0.93, 0.80, 0.95]))
    assert time_to_target(m, 0.93) == {"epochs": 2.0, "seconds": 20.0, "grad_evals": 22.0}
    assert math.isnan(time_to_target(m, 0.99)["epochs"])


def test_markdown_shows_percent_mean_std_and_partial_counts(table):
    text = markdown(table.reset_index(), (0.90, 0.93), EXPERIMENT, "notes")
    # models and optimizers as their configs' `display` names them
    lines = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| CNN")}
    assert "| 3/3 | 0 | 0 | 0 | 96.00 ± 1.00 |" in lines["DRSOM"]
    assert "| 2/3 | 1 | 0 | 0 | 93.00 ± 1.41 |" in lines["Adam"]
    assert "5.0 (1/2)" in lines["Adam"]  # epochs to 93%: one of the two finished seeds
    assert "| 1/3 | 0 | 1 | 1 | 93.00 |" in lines["AdaBelief"]
    assert "not reached (0/3)" in lines["SGD"]


def test_summarize_writes_markdown_and_csv(store, tmp_path):
    out = tmp_path / "tables"
    assert (
        make_tables.main(["--results", str(store), "--out", str(out), "--targets", "90", "0.93"])
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


# -------------------------------------------------------------------------------- figures
def test_one_line_per_optimizer_with_the_fixed_colours_and_seed_counts(selection):
    frame = metrics_frame(selection.runs)
    fig = figures.curve_figure(
        frame,
        "test_acc",
        "epoch",
        "title",
        order=["drsom", "adam", "adabelief", "sgd"],
        legend_notes=plot_curves.legend_notes(selection.runs),
        shown=figures.looks(selection.runs),
    )
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == [
        "DRSOM (3 seeds)",
        "Adam (3 seeds; 1 diverged)",
        "AdaBelief (2 seeds; 1 unfinished)",
        "SGD (3 seeds)",
    ]
    drsom = lines["DRSOM (3 seeds)"]
    # the colours the configs give (configs/optimizer/drsom.yaml, sgd.yaml); DRSOM on top
    assert drsom.get_color() == "#000000" and drsom.get_zorder() == 3
    assert lines["SGD (3 seeds)"].get_color() == "#1f77b4"
    np.testing.assert_allclose(drsom.get_xdata(), [1, 2, 3, 4, 5])
    np.testing.assert_allclose(drsom.get_ydata(), [55, 88.333333, 91.333333, 94, 96], rtol=1e-6)
    # the diverged adam seed counts while it has epochs: mean of 3 runs, then of 2
    np.testing.assert_allclose(
        lines["Adam (3 seeds; 1 diverged)"].get_ydata(), [70, 80, 85, 90, 93]
    )
    assert len(ax.collections) == 4  # a band per optimizer
    plt.close(fig)


def test_band_is_std_from_three_seeds_and_min_max_below():
    agg = pd.DataFrame(
        {
            "mean": [0.5, 0.5, 0.5],
            "std": [0.1, 0.1, np.nan],
            "lo": [0.3, 0.4, 0.5],
            "hi": [0.7, 0.6, 0.5],
        }
        | {"n": [3, 2, 1]}
    )
    lower, upper = figures.band(agg)
    np.testing.assert_allclose(lower, [0.4, 0.4, 0.5])
    np.testing.assert_allclose(upper, [0.6, 0.6, 0.5])


def test_x_axis_time_and_gradient_evaluations_use_the_stores_cost_columns(selection):
    frame = metrics_frame(selection.runs)
    for x, expected in (("time", [11, 21, 31, 41, 51]), ("grad_evals", [33, 66, 99, 132, 165])):
        shown = figures.looks(selection.runs)
        fig = figures.curve_figure(frame, "test_acc", x, "t", order=["drsom"], shown=shown)
        drsom = next(li for li in fig.axes[0].get_lines() if li.get_label().startswith("DRSOM"))
        np.testing.assert_allclose(drsom.get_xdata(), expected)  # mean over seeds 0, 1, 2
        plt.close(fig)


def test_plot_curves_writes_png_and_pdf_per_model_and_metric(store, tmp_path):
    out = tmp_path / "figures"
    args = ["--results", str(store), "--out", str(out), "--metrics", "test_acc", "train_loss"]
    assert plot_curves.main(args) == 0
    folder = out / EXPERIMENT
    for metric in ("test_acc", "train_loss"):
        for suffix in (".png", ".pdf"):
            path = folder / f"cnn-{metric}-epoch{suffix}"
            assert path.stat().st_size > 10_000, path
    image = plt.imread(folder / "cnn-test_acc-epoch.png")
    assert image.shape[0] > 600 and image.std() > 0.05  # a drawn figure, not a blank canvas


def test_reference_curves_are_dashed_in_the_optimizers_colour_and_in_percent(tmp_path):
    published = tmp_path / "curves.csv"
    pd.DataFrame(
        {
            "model": ["resnet34"] * 4 + ["vgg11"] * 2,
            "optimizer": ["sgd", "sgd", "adabelief", "adabelief", "sgd", "sgd"],
            "hyperparameters": "x",
            "epoch": [1, 2, 1, 2, 1, 2],
            "train_acc": [40.0, 60.0, 50.0, 70.0, 1.0, 2.0],
            "test_acc": [45.0, 65.0, 55.0, 75.0, 1.0, 2.0],
        }
    ).to_csv(published, index=False)
    reference = load_reference(published)
    assert reference["test_acc"].max() == pytest.approx(0.75)  # fractions, like the store
    runs = [synthetic_run("sgd", 0, [0.5, 0.6]), synthetic_run("drsom", 0, [0.55, 0.7])]
    facts = {"data": "cifar10", "model": "resnet34"}
    ref = plot_curves._reference_for(reference, facts, "epoch")
    frame, shown = metrics_frame(runs), figures.looks(runs)
    fig = figures.curve_figure(frame, "test_acc", "epoch", "t", reference=ref, shown=shown)
    dashed = [li for li in fig.axes[0].get_lines() if li.get_linestyle() == "--"]
    # sgd has our runs and published ones; adabelief is not in the figure; vgg11 is another model
    assert [li.get_label() for li in dashed] == ["SGD (published, 1 run)"]
    assert dashed[0].get_color() == SHOWN["sgd"][1]
    np.testing.assert_allclose(dashed[0].get_ydata(), [45.0, 65.0])
    plt.close(fig)
    assert (
        plot_curves._reference_for(reference, {"data": "digits", "model": "cnn"}, "epoch") is None
    )


def test_a_wrong_reference_file_is_one_line_and_exit_code_2(store, tmp_path, capsys):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("model,epoch\nresnet34,1\n")
    for path in (wrong, tmp_path / "absent.csv"):
        assert plot_curves.main(["--results", str(store), "--reference", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --reference {path}") and err.count("\n") == 1


# how the synthetic runs' configs say to show them (display, colour)
SHOWN = {"drsom": ("DRSOM", "#000000"), "sgd": ("SGD", "#1f77b4"), "adam": ("Adam", "#ff7f0e")}


def synthetic_run(optimizer: str, seed: int, accs: list[float]) -> Run:
    display, color = SHOWN.get(optimizer, (optimizer, None))
    cfg = {
        "experiment": "x",
        "data": {"name": "cifar10"},
        "model": {"name": "resnet34"},
        # drsom_twin: drsom's config under a second label (the same target and arguments)
        "optimizer": {"_target_": f"x.{optimizer.split('_')[0]}", "label": optimizer}
        | {"display": display, "color": color},
        "seed": seed,
    }
    metrics = pd.DataFrame(metric_rows(optimizer, seed, accs))
    return Run(f"{optimizer}-s{seed}", Path("."), cfg, {"status": "finished"}, metrics)


def test_accuracy_figures_magnify_the_second_half_in_a_panel_of_their_own():
    accs = [0.5, 0.8, 0.9, 0.95, 0.96, 0.97, 0.975, 0.98, 0.982, 0.985]
    runs = [synthetic_run("drsom", s, [a - 0.01 * s for a in accs]) for s in range(3)]
    runs.append(synthetic_run("sgd", 0, [0.3, 0.4]))  # diverged early: no second half
    runs.append(synthetic_run("adam", 0, [0.5] * 10))  # far below: named, not drawn
    fig = figures.curve_figure(
        metrics_frame(runs), "test_acc", "epoch", "t", shown=figures.looks(runs)
    )
    main, zoom = fig.axes
    assert len(main.get_lines()) == 3 and len(zoom.get_lines()) == 1
    assert [text.get_text() for text in zoom.texts] == ["below the frame: Adam"]
    assert zoom.get_xlim() == (5, 10)
    low, high = zoom.get_ylim()  # the band of epochs 5-10 (95.0 - 1 to 98.5), padded a little
    assert 93.5 < low < 94.0 and 98.5 < high < 99.0
    plt.close(fig)
    loss = figures.curve_figure(metrics_frame(runs), "train_loss", "epoch", "t")
    assert len(loss.axes) == 1 and loss.axes[0].get_yscale() == "log"
    plt.close(loss)


def test_legend_names_a_second_label_of_the_same_config_and_lost_runs():
    runs = [synthetic_run("drsom", 0, [0.5]), synthetic_run("sgd", 0, [0.5])]
    runs += [synthetic_run("drsom_twin", 0, [0.5]), synthetic_run("drsom_twin", 1, [0.5])]
    runs[-1].summary["status"] = "diverged"
    runs[-1].config["seed"] = 1
    # seed 0 is DRSOM's config under a second name; seed 1 has no DRSOM twin and diverged
    assert plot_curves.legend_notes(runs) == {runs[-1].variant: "1 diverged; same as DRSOM"}


def test_protocol_title_states_data_model_seeds_device_and_schedule():
    facts = {
        "data": "digits",
        "model": "cnn",
        "data_display": "digits (sklearn)",
        "model_display": "CNN",
        "train_images": 1347,
        "epochs": 30,
        "batch_size": 128,
        "schedule": "lr ×0.1 after epoch 22",
        "device": "cpu",
    }
    assert figures.protocol_title(facts, 3) == (
        "digits (sklearn), 1,347 train images, CNN, 3 seeds, CPU\n"
        "30 epochs, batch 128, lr ×0.1 after epoch 22"
    )


def test_colours_come_from_the_configs_and_differ_within_every_experiment():
    for name in experiment_names():
        params = OmegaConf.load(REPO / "experiments" / f"{name}.yaml").hydra.sweeper.params
        labels = str(params.optimizer).split(",")
        colours = {compose_config(f"optimizer={lbl}")["optimizer"]["color"] for lbl in labels}
        assert len(colours) == len(labels), name
    # a config without one: a colour fixed by its label, the same in every figure
    assert figures.color("my_new_optimizer") == figures.color("my_new_optimizer")
    assert figures.color("my_new_optimizer") != figures.color("my_other_optimizer")


def test_a_run_made_under_an_older_config_is_used_and_not_silently_lost(store, tmp_path):
    root = tmp_path / "runs"
    cfg = compose_config(f"experiment={EXPERIMENT}", "optimizer=sgd", "seed=0")
    cfg["trainer"]["an_old_key"] = 1  # changes the hash, as adding a config key would
    write_run(root, cfg, metric_rows("sgd", 0, [0.4, 0.5]), "finished")
    selection = select_runs(root, EXPERIMENT)
    assert [r.key()[3:] for r in selection.runs] == [("sgd", 0)]
    assert len(selection.missing) == 11 and len(selection.substituted) == 1


# ------------------------------------------------------------------------- wandb export
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
    assert summary["best_test_acc"] == 0.95 and summary["counts"] == {
        "forward": 110,
        "grad": 55,
        "hvp": 110,
    }
    assert summary["exported_from"] == {"wandb": "team/proj/abc123", "state": "finished"}

    selection = select_runs(out, EXPERIMENT, grid)
    assert not selection.missing and not selection.substituted
    table = experiment_table(run_rows(selection)).set_index("optimizer")
    assert table.loc["drsom", "final_test_acc_mean"] == pytest.approx(0.95)
    assert table.loc["drsom", "grad_evals_to_90_mean"] == 66  # epoch 2: 22 grads + 44 HVPs
    assert (table.loc["adam", "seeds"], table.loc["adam", "unfinished"]) == (0, 1)
    assert table.loc["sgd", "final_test_acc_mean"] == pytest.approx(0.80)

    # a finished local run is the source of truth: kept unless --force
    write_csv(drsom.metrics, METRIC_COLUMNS, metric_rows("drsom", 0, [0.99]))
    again = export_wandb.export(types.SimpleNamespace(runs=fake_runs), "team/proj", out)
    assert again[0][1] == "kept (finished locally)"
    assert len(pd.read_csv(drsom.metrics)) == 1


def test_store_round_trip_reads_every_run_folder(store):
    runs = load_store(store)
    assert len(runs) == 11 and {r.status for r in runs} == {"finished", "diverged", "interrupted"}


# ------------------------------------------------------------------------- make figures
def _build_figures(store: Path, out: Path, *extra: str) -> int:
    argv = ["--results", str(store), "--figures", str(out / "figures")]
    return build_figures.main([*argv, "--tables", str(out / "tables"), *extra])


def test_build_figures_replaces_both_folders_and_leaves_nothing_stale(store, tmp_path):
    (tmp_path / "figures" / "gone").mkdir(parents=True)
    (tmp_path / "figures" / "gone" / "stale.png").write_text("old")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "stale.md").write_text("old")
    assert _build_figures(store, tmp_path) == 0
    drawn = {p.name for p in (tmp_path / "figures" / EXPERIMENT).iterdir()}
    # every metric per epoch, test accuracy against both cost axes, png and pdf
    assert "cnn-train_loss-epoch.pdf" in drawn and "cnn-test_acc-grad_evals.png" in drawn
    assert "cnn-test_acc-time.png" in drawn and "cnn-train_acc-time.png" not in drawn
    assert not (tmp_path / "figures" / "gone").exists()
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == sorted(
        f"{EXPERIMENT}{s}" for s in (".md", ".csv", ".runs.csv")
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_build_figures_with_a_wrong_reference_leaves_everything_as_it_was(store, tmp_path):
    for folder in ("figures", "tables"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "kept.txt").write_text(folder)
    assert _build_figures(store, tmp_path, "--reference", str(tmp_path / "nowhere.csv")) == 2
    assert (tmp_path / "figures" / "kept.txt").read_text() == "figures"
    assert (tmp_path / "tables" / "kept.txt").read_text() == "tables"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "tables"]


def test_build_figures_failing_midway_leaves_everything_as_it_was(store, tmp_path, monkeypatch):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "kept.txt").write_text("figures")
    monkeypatch.setattr(build_figures.make_tables, "main", lambda argv: 1)  # tables fail last
    assert _build_figures(store, tmp_path) == 1
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["kept.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]


# ------------------------------------------------------------------------------- variants
@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory) -> Path:
    """``python run.py -m optimizer=adam optimizer.lr=1e-3,1e-2 data=digits model=cnn`` (seed 0,
    no experiment file), plus one SGD run on the fake CIFAR-10: three variants, ad-hoc runs."""
    root = tmp_path_factory.mktemp("adhoc")
    base = ["data=digits", "model=cnn", "trainer.epochs=3"]
    cfgs = compose_configs(
        [*base, "optimizer=adam", "optimizer.lr=1e-3"],
        [*base, "optimizer=adam", "optimizer.lr=1e-2"],
        ["data=cifar10", "model=cnn", "trainer.epochs=3", "optimizer=sgd"],
    )
    for cfg, accs in zip(cfgs, ([0.6, 0.9, 0.97], [0.2, 0.25, 0.3], [0.4, 0.5, 0.6]), strict=True):
        write_run(root, cfg, metric_rows(cfg["optimizer"]["label"], 0, accs), "finished")
    return root


def test_two_learning_rates_are_two_rows_labelled_by_lr_never_one_mean(lr_sweep, tmp_path):
    assert make_tables.main(["--results", str(lr_sweep), "--out", str(tmp_path)]) == 0
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


def test_ad_hoc_runs_are_drawn_per_dataset_and_model_one_line_per_variant(lr_sweep, tmp_path):
    args = ["--results", str(lr_sweep), "--out", str(tmp_path), "--metrics", "test_acc"]
    assert plot_curves.main(args) == 0
    names = sorted(p.name for p in (tmp_path / "default").glob("*.png"))
    assert names == ["cifar10-cnn-test_acc-epoch.png", "digits-cnn-test_acc-epoch.png"]
    frame = metrics_frame(load_store(lr_sweep))
    digits = frame[frame["data"] == "digits"]
    fig = figures.curve_figure(
        digits, "test_acc", "epoch", "t", shown=figures.looks(load_store(lr_sweep))
    )
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["Adam lr=0.001 (1 seed)", "Adam lr=0.01 (1 seed)"]
    lines = fig.axes[0].get_lines()
    assert [list(line.get_ydata()) for line in lines] == [[60, 90, 97], [20, 25, 30]]
    assert lines[0].get_color() != lines[1].get_color()
    plt.close(fig)


def test_an_empty_selection_says_what_the_store_holds(lr_sweep, tmp_path, capsys):
    args = ["--results", str(lr_sweep), "--out", str(tmp_path), "--experiment", "nothing"]
    assert make_tables.main(args) == 0
    out = capsys.readouterr().out
    assert "nothing: no runs in" in out
    assert "the store holds default (3 runs); select one with --experiment NAME" in out


# ----------------------------------------------------------------------------- broken runs
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
    assert make_tables.main(["--results", str(tmp_path), "--out", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("broken run ") for line in err)
    said = {line.split(": ", 1)[0].rsplit("-", 1)[-1]: line for line in err}  # by seed
    assert "metrics.csv has 1 of the 3 epochs its summary.json reports" in said["s1"]
    assert "summary.json cannot be read" in said["s2"] and "counted as unfinished" in said["s2"]
    assert "config.yaml is of another format" in said["s3"] and "left out" in said["s3"]
    table = pd.read_csv(out / "default.csv").iloc[0]
    assert (table["seeds"], table["runs"], table["unfinished"]) == (1, 3, 2)
    assert table["final_test_acc_mean"] == pytest.approx(0.9)  # seed 0 alone, not seed 1's 0.1
    # nothing readable at all: exit 2
    folders[0].summary.write_text("[1]")
    assert make_tables.main(["--results", str(tmp_path), "--out", str(out)]) == 2
