"""Each experiment's targets: the command line over the experiment file's own over the file beside
the store over the default."""

import json

import pytest

from drsom.analysis.accuracy_targets import Targets
from drsom.analysis.tables import DEFAULT_TARGETS


@pytest.fixture
def store(tmp_path):
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    (runs.parent / "targets.json").write_text(json.dumps({"cifar": [60, 0.65]}))
    return runs


def test_declared_targets_are_read_beside_the_store_and_others_get_the_default(store):
    targets = Targets.resolve(store)
    assert targets.path == store.parent / "targets.json"
    assert targets.of("cifar") == pytest.approx((0.60, 0.65))
    assert targets.of("digits") == DEFAULT_TARGETS


def test_targets_on_the_command_line_apply_to_every_experiment(store):
    targets = Targets.resolve(store, targets=[80])
    assert targets.of("cifar") == targets.of("digits") == pytest.approx((0.80,))


def test_a_targets_file_that_is_not_one_is_one_value_error_naming_it(store):
    bad = store.parent / "targets.json"
    bad.write_text(json.dumps({"cifar": 0.6}))
    with pytest.raises(ValueError, match=f"^targets {bad}: expected"):
        Targets.resolve(store)


def test_an_experiment_files_own_targets_win_over_the_file_beside_the_store(store):
    (store.parent / "targets.json").write_text(json.dumps({"cifar10_jpeg_cnn": [90]}))
    targets = Targets.resolve(store)
    assert targets.of("cifar10_jpeg_cnn") == pytest.approx((0.60, 0.65))  # its study.targets
    assert targets.of("tune_cifar10_jpeg_cnn") == pytest.approx((0.50, 0.55))
    assert targets.of("digits_tuned_cnn") == DEFAULT_TARGETS  # a file without study.targets
    assert Targets.resolve(store, targets=[80]).of("cifar10_jpeg_cnn") == pytest.approx((0.8,))


@pytest.mark.parametrize("declared", ["0.6", "[]", "[0.6, 150]", "{a: 1}"])
def test_bad_targets_in_an_experiment_file_are_one_line_naming_it(
    store, tmp_path, monkeypatch, declared
):
    from drsom.cfg import experiments

    folder = tmp_path / "experiment"
    folder.mkdir()
    (folder / "mine.yaml").write_text(f"study:\n  targets: {declared}\n")
    monkeypatch.setattr(experiments, "EXPERIMENT_DIR", folder)
    with pytest.raises(ValueError, match=r"^\S+experiment/mine\.yaml: study\.targets: ") as caught:
        Targets.resolve(store).of("mine")
    assert "\n" not in str(caught.value)
