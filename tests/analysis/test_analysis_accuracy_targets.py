"""Each experiment's targets: the command line over the file beside the store over the default."""

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


def test_options_resolve_to_the_same_targets_from_another_store(store, tmp_path):
    for given in (None, [75, 0.9]):
        targets = Targets.resolve(store, targets=given)
        args = targets.options()
        again = Targets.resolve(
            tmp_path / "elsewhere",
            targets=[float(v) for v in args[3:]] or None,
            targets_file=args[1],
        )
        for experiment in ("cifar", "digits"):
            assert again.of(experiment) == targets.of(experiment)


def test_a_targets_file_that_is_not_one_is_one_value_error_naming_it(store):
    bad = store.parent / "targets.json"
    bad.write_text(json.dumps({"cifar": 0.6}))
    with pytest.raises(ValueError, match=f"^targets {bad}: expected"):
        Targets.resolve(store)
