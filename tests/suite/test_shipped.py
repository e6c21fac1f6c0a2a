"""The shipped results reproduce from the landed code: a change that alters what a run computes
cannot land unnoticed (rerun the experiments and ship their new results with it instead)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drsom.analysis.runs import load_store
from drsom.analysis.tuned import select
from drsom.job.record import machine
from drsom.store.folder import RunDir
from drsom.store.sweeps import sweep_runs
from drsom.tools import reproduce
from drsom.tools import tables as tables_tool

REPO = Path(__file__).resolve().parents[2]
SELECTED = REPO / "results" / "selected"


def shipped_drsom_run() -> RunDir:
    """DRSOM (tuned), seed 0, of the shipped digits_tuned_cnn study: the folder its grid names
    with drsom-select's shipped configs, so the test follows the config's run id."""
    search = f"hydra.searchpath=[file://{SELECTED}]"
    runs = sweep_runs("digits_tuned_cnn", [search, "seed=0"], base_dir=REPO)
    (run,) = [r for r in runs if "optimizer=tune_digits_cnn/drsom" in r.overrides]
    return run.run_dir


def test_every_shipped_runs_config_still_runs_under_its_own_id():
    """A key added to the configs must not orphan the stored runs: each stored config.yaml,
    completed as the runner completes it, passes the run's checks and names its own folder (so
    it resumes and drsom-reproduce reruns it on any processor)."""
    from omegaconf import OmegaConf

    from drsom.job.validate import validate
    from drsom.store.identity import complete, run_id

    folders = sorted((REPO / "results" / "runs").iterdir())
    assert len(folders) > 100
    for folder in folders:
        config = complete(OmegaConf.to_container(OmegaConf.load(folder / "config.yaml")))
        validate(config)
        assert run_id(config) == folder.name


@pytest.mark.parametrize(
    "tuning, labels",
    [
        ("tune_digits_cnn", {"drsom", "drsom_hvp", "adam", "adabelief", "sgd"}),
        (
            "tune_cifar10_jpeg_cnn",
            {"drsom", "drsom_adaptive", "drsom_seed", "drsom_hvp", "adam", "adabelief", "sgd"},
        ),
    ],
)
def test_the_shipped_selection_is_what_drsom_select_makes_of_the_shipped_trials(tuning, labels):
    store = load_store(REPO / "results" / "runs", report=lambda line: None)
    _, configs = select(store, tuning, studies_dir=REPO / "results" / "studies")
    assert set(configs) == labels
    for label, text in configs.items():
        shipped = SELECTED / "optimizer" / tuning / f"{label}.yaml"
        assert shipped.read_text() == text, f"{shipped}: rerun drsom-select"


def test_a_shipped_digits_run_reproduces_its_first_five_epochs(capsys):
    shipped = shipped_drsom_run()
    assert shipped.metrics.exists(), f"{shipped.path}: the grid's run is part of the repository"
    made_on = (shipped.read_summary() or {}).get("machine")
    if made_on != machine():
        # Float kernels differ between processors (AVX2 vs AVX-512, math library builds): a
        # bitwise rerun is only a claim about the same kind of machine.
        pytest.skip(f"shipped runs were made on {made_on}; this machine is {machine()}")
    assert reproduce.main([str(shipped.path), "--epochs", "5"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    columns = ("train_loss", "test_acc", "val_acc", "train_eval_acc", "radius_mean", "forward")
    for column in (*columns, "accepted_mean", "grad"):
        assert f"metrics.csv {column}: identical" in out
    assert "steps.csv rho: identical" in out  # its first diagnostics row: step 50, epoch 5


HEADLINE = "cifar10_jpeg_cnn"
VARIANTS = "cifar10_jpeg_variants_cnn"
RESNET = "cifar10_jpeg_resnet18"
# each shipped study's README table, known by its paired-difference column
README_TABLES = {
    HEADLINE: "minus Adam, paired (points)",
    VARIANTS: "minus the default, paired (points)",
    RESNET: "ResNet minus Adam, paired (points)",
}


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table of ``text``, each as its rows keyed by the header's cells."""
    tables: list[list[dict[str, str]]] = []
    header: list[str] | None = None
    for line in [*text.splitlines(), ""]:
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            tables.append([])
        elif not set("".join(cells)) <= set("-: "):
            tables[-1].append(dict(zip(header, cells, strict=True)))
    return tables


@pytest.fixture(scope="module")
def study_tables(tmp_path_factory) -> Path:
    """make_tables' output for the README's studies, made now from the shipped runs."""
    out = tmp_path_factory.mktemp("tables")
    args = ["--results", str(REPO / "results" / "runs"), "--out", str(out)]
    for study in README_TABLES:
        args += ["--experiment", study]
    assert tables_tool.main(args) == 0
    return out


@pytest.mark.parametrize("study", list(README_TABLES))
def test_a_studys_shipped_tables_are_what_its_shipped_runs_make(study_tables, study):
    made = sorted(p.name for p in study_tables.glob(f"{study}.*"))
    assert made, "make_tables wrote nothing"
    for name in made:
        shipped = REPO / "results" / "tables" / name
        assert shipped.read_text() == (study_tables / name).read_text(), (
            f"{shipped}: not what the shipped runs make; run make figures and commit"
        )


@pytest.mark.parametrize("study", list(README_TABLES))
def test_the_readmes_table_of_a_study_quotes_the_tables_made_from_the_shipped_runs(
    study_tables, study
):
    tables = markdown_tables((study_tables / f"{study}.md").read_text())
    means = {r["optimizer"]: r for t in tables for r in t if "final train acc (%)" in r}
    intervals = {r["optimizer"]: r for t in tables for r in t if "gradients to 60%" in r}
    paired = {r["optimizer"]: r for t in tables for r in t if "difference [95% CI]" in r}
    column = README_TABLES[study]
    readme = [t for t in markdown_tables((REPO / "README.md").read_text()) if t and column in t[0]]
    assert len(readme) == 1, f"README.md: one table with a column {column!r}"
    (rows,) = readme
    assert {r["optimizer"] for r in rows} == set(intervals), "README.md: one row per optimizer"
    for row in rows:
        made = intervals[row["optimizer"]]
        for key in ("final test acc (%)", "grad-equiv to 60%", "grad-equiv to 65%"):
            assert row[key] == made[key], (row["optimizer"], key)
        for key in ("final train acc (%)", "train s to 60%", "train s to 65%"):
            if key in row:
                assert row[key] == means[row["optimizer"]][key], (row["optimizer"], key)
        difference = paired.get(row["optimizer"], {}).get("difference [95% CI]", "(baseline)")
        assert row[column] == difference, row["optimizer"]
