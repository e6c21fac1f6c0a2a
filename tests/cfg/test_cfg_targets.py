"""Plug-ins by import path (``drsom.cfg.targets``): a folder of a user's own YAML files, kept
outside the repository, brings an optimizer, a model and a dataset, and their runs appear in the
tables and figures under their own names."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from analysis_store import write_weights

from drsom.analysis.runs import load_store
from drsom.cfg.targets import TargetError, build, check_keywords, keywords
from drsom.data import ImageDataset, load_dataset
from drsom.tools import curves as curves_tool

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "my_configs"


def test_keywords_of_a_class_walk_its_mro_and_of_a_function_see_its_kwargs():
    from drsom.optim.baselines import MSVAG

    named, open_ended = keywords(MSVAG)
    assert {"lr", "beta", "weight_decay"} <= set(named) and not open_ended  # the mixin's too
    import torchvision

    named, open_ended = keywords(torchvision.models.resnet18)
    assert set(named) == {"weights", "progress"} and open_ended


def test_build_passes_injected_values_unless_the_config_sets_them():
    node = {"_target_": "torch.nn.Linear", "name": "lin", "in_features": 3}
    layer = build("model", node, ("name",), out_features=5)
    assert (layer.in_features, layer.out_features) == (3, 5)
    layer = build("model", {**node, "out_features": 2}, ("name",), out_features=5)
    assert layer.out_features == 2


def test_a_missing_target_says_what_to_write():
    with pytest.raises(TargetError, match=r"optimizer._target_ is missing: .* torch.optim.NAdam"):
        check_keywords("optimizer", {"lr": 0.1}, ())


def _grating(n_train=8, n_test=4, classes=3, **change) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    fields = dict(
        train_images=torch.randint(0, 256, (n_train, 8, 8, 1), generator=g, dtype=torch.uint8),
        train_labels=torch.arange(n_train) % classes,
        test_images=torch.randint(0, 256, (n_test, 8, 8, 1), generator=g, dtype=torch.uint8),
        test_labels=torch.arange(n_test) % classes,
        num_classes=classes,
    )
    return ImageDataset(**{**fields, **change})


def returns_a_dataset(**change):
    """A dataset function for the tests below (importable as ``test_targets.returns_a_dataset``
    through the tests folder on ``sys.path``)."""
    return _grating(**change)


def returns_a_tensor():
    return torch.zeros(3)


def test_a_dataset_function_is_called_and_its_result_checked_and_completed():
    data = load_dataset({"_target_": f"{__name__}.returns_a_dataset", "name": "g"})
    assert data.input_shape == (1, 8, 8)
    pixels = data.train_images.double() / 255
    assert data.mean == pytest.approx([pixels.mean().item()])  # filled in from the train images
    assert data.std == pytest.approx([pixels.std().item()])


BROKEN = [
    ({"train_images": torch.zeros(8, 8, 8, 1)}, "train_images must be a torch.uint8 tensor"),
    ({"test_images": torch.zeros(4, 9, 8, 1, dtype=torch.uint8)}, "test_images are (9, 8, 1)"),
    ({"train_images": torch.zeros(8, 8, 8, 2, dtype=torch.uint8)}, "C in {1, 3}, got (8, 8, 8, 2)"),
    ({"train_labels": torch.arange(8) % 3 + 1}, "train_labels lie in [1, 3], outside [0, num_cl"),
    ({"test_labels": torch.zeros(3, dtype=torch.int64)}, "test_labels must have shape (4,)"),
    ({"train_labels": torch.zeros(8)}, "train_labels must be an integer tensor"),
    ({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
    ({"mean": (0.5, 0.5, 0.5)}, "mean must have 1 values (one per channel), got 3"),
]


@pytest.mark.parametrize(("change", "message"), BROKEN, ids=[b[1][:24] for b in BROKEN])
def test_a_dataset_that_breaks_the_contract_is_one_line_naming_the_function(change, message):
    with pytest.raises(ValueError) as info:
        _grating(**change).check("my.data")
    text = str(info.value)
    assert text.startswith("data (my.data): ") and message in text and "\n" not in text


def test_load_dataset_reports_a_broken_contract_as_a_target_error():
    target = f"{__name__}.returns_a_dataset"
    with pytest.raises(TargetError, match=rf"^data \({target}\): num_classes must be a positive"):
        load_dataset({"_target_": target, "num_classes": 0})


def test_a_dataset_function_returning_something_else_is_refused():
    with pytest.raises(TargetError, match=r"returned a Tensor, not a drsom.data.ImageDataset"):
        load_dataset({"_target_": f"{__name__}.returns_a_tensor"})
    with pytest.raises(TargetError, match=rf"data.size is not an argument of {__name__}.returns_a"):
        load_dataset({"_target_": f"{__name__}.returns_a_tensor", "size": 3})


def _run(
    tmp_path: Path, folder: Path, results: Path, *overrides: str
) -> subprocess.CompletedProcess:
    # the user's folder is on the path, as docs/usage.md has them do; drsom is the installed one
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(folder)}
    command = [
        sys.executable,
        str(REPO / "run.py"),
        f"hydra.searchpath=[file://{folder}]",
        "experiment=plugins_demo",
        "trainer.epochs=2",
        "trainer.lr_milestones=[1]",
        "trainer.device=cpu",
        "trainer.progress=false",
        f"results_dir={results}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        *overrides,
    ]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)


def test_a_users_folder_brings_optimizer_model_and_dataset_end_to_end(tmp_path):
    folder = tmp_path / "my_configs"  # outside the repository, as a user keeps it
    shutil.copytree(EXAMPLE, folder)
    results = tmp_path / "runs"
    done = [
        _run(
            tmp_path,
            folder,
            results,
            "data=digits",
            "model=cnn",
            "optimizer=nadam",
            "data.train_subset=200",
        ),
        _run(
            tmp_path,
            folder,
            results,
            "data=digits",
            "model=tv_resnet18",
            "optimizer=adam",
            "data.train_subset=64",
        ),
        _run(
            tmp_path,
            folder,
            results,
            "data=stripes",
            "model=cnn",
            "optimizer=drsom",
            "data.n_train=128",
            "data.n_test=64",
        ),
    ]
    for proc in done:
        assert proc.returncode == 0, proc.stderr[-2000:]
    runs = {r.run_id.rsplit("-", 2)[0]: r for r in load_store(results)}
    assert set(runs) == {"digits-cnn-nadam", "digits-tvresnet18-adam", "stripes-cnn-drsom"}
    assert all(r.summary["status"] == "finished" for r in runs.values())
    # 128 stripes, 13 of them held out for validation (the default val_size, a tenth)
    assert runs["stripes-cnn-drsom"].summary["data_fingerprint"].startswith("115+64:")
    assert runs["digits-cnn-nadam"].config["optimizer"]["_target_"] == "torch.optim.NAdam"

    tables, figures = tmp_path / "tables", tmp_path / "figures"
    # the tables' costs are in gradient equivalents: a user measures the weights of their models
    # (scripts/bench_optimizers.py --oracle-weights); here, stand-in values beside the store
    write_weights(tmp_path / "cost_weights.json", models=("cnn", "tvresnet18"))
    # a user's door, the script from their own folder; the figures in-process (a third torch import)
    script = [sys.executable, str(REPO / "scripts" / "make_tables.py")]
    proc = subprocess.run(
        [*script, "--results", str(results), "--out", str(tables)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert curves_tool.main(["--results", str(results), "--out", str(figures)]) == 0
    table = (tables / "plugins_demo.md").read_text()
    for shown in ("| NAdam |", "| ResNet-18 (torchvision) |", "| stripes (synthetic) |"):
        assert shown in table, table
    assert "stripes (synthetic), 115 train images, CNN" in table
    drawn = {p.name for p in (figures / "plugins_demo").glob("*.png")}
    assert {"digits-tvresnet18-test_acc-epoch.png", "stripes-cnn-test_acc-epoch.png"} <= drawn


def test_a_bad_plugin_stops_before_any_data_is_read_with_one_line(tmp_path):
    folder = tmp_path / "my_configs"
    shutil.copytree(EXAMPLE, folder)
    (folder / "optimizer" / "typo.yaml").write_text(
        "_target_: torch.optim.NAdamm\n_partial_: true\nlr: 0.01\n"
    )
    proc = _run(
        tmp_path,
        folder,
        tmp_path / "runs",
        "data=stripes",
        "optimizer=typo",
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: optimizer._target_='torch.optim.NAdamm' cannot be imported")
    assert not (tmp_path / "runs").exists()
