"""The runner against an adversarial user: what broke once, each with the behaviour it has now.

A bad value is one line naming the key and what is accepted, a non-zero exit, and no run folder;
a checkpoint or summary that does not fit the run is reported and set aside; compiled models
train and resume. Runs are seconds long on a fake CIFAR-10 under tmp_path; wandb is disabled.
(A full disk: tests/store/test_store_folder.py; force and requeues:
tests/launch/test_launch_jobs.py; wandb's failures: tests/training/test_training_tracking.py.)
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from run_helpers import cli, only_run, read_csv, run_inprocess, summary_of, tiny

from drsom.job.validate import ConfigError, validate
from drsom.store.identity import complete
from drsom.store.state import run_state

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread", "no_scheduler_job")


def one_error_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ------------------------------------------------------------------- bad values: one line
UNWRITABLE = Path("/sys/kernel")  # sysfs: even root cannot make a folder there


@pytest.mark.parametrize(
    ("overrides", "env", "expected"),
    [
        (
            ["optimizer.label=../../escape"],
            {},
            "optimizer.label='../../escape' is not a file-name part",
        ),
        (["optimizer.label=a/b"], {}, "optimizer.label='a/b' is not a file-name part"),
        (["seed=99999999999"], {}, "seed must be an integer in [0, 4294967295], got 99999999999"),
        (
            ["trainer.lr_schedule=step", "trainer.lr_milestones=[2,1]", "trainer.epochs=3"],
            {},
            "trainer.lr_milestones=[2, 1] must be increasing",
        ),
        (["logger.mode=bogus"], {}, "logger.mode='bogus' is not one of offline, online, disabled"),
        (
            ["logger.mode=${oc.env:WANDB_MODE,offline}"],  # the default of configs/logger/wandb
            {"WANDB_MODE": "bogus"},
            "logger.mode='bogus' (from the WANDB_MODE environment variable) is not one of",
        ),
    ],
    ids=["label-escape", "label-nested", "seed-2**32", "milestones-2-1", "logger-mode", "env-mode"],
)
def test_bad_input_is_one_line_before_any_folder(overrides, env, expected, cifar_root, tmp_path):
    out = cli(*tiny(cifar_root, tmp_path / "r", *overrides), cwd=tmp_path, env=env)
    line = one_error_line(out)
    assert line.startswith(f"error: {expected}"), line
    assert not (tmp_path / "r").exists()
    assert not any(p.name == "escape" for p in tmp_path.rglob("*"))


def test_labels_that_are_file_name_parts_are_accepted(cifar_root, tmp_path):
    assert run_inprocess(tiny(cifar_root, tmp_path, "optimizer=sgd", "optimizer.label=sgd_lr0.1"))
    assert only_run(tmp_path).name.startswith("cifar10-cnn-sgd_lr0.1-")


class BrokenOptimizer(torch.optim.SGD):
    """An optimizer whose constructor fails in an unexpected way (two lines, no ValueError)."""

    def __init__(self, params, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0):
        raise RuntimeError("something odd\nin two lines")


def test_any_error_of_the_optimizer_probe_is_one_line_naming_the_optimizer():
    target = f"{__name__}.BrokenOptimizer"
    overrides = ["optimizer=sgd", f"optimizer._target_={target}", "trainer.device=cpu"]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "logger.mode=disabled"])
    with pytest.raises(ConfigError) as err:
        validate(complete(OmegaConf.to_container(cfg, resolve=True)))
    assert str(err.value) == f"optimizer ({target}): something odd in two lines"


def test_amp_on_the_cpu_says_so_in_one_warning(cifar_root, tmp_path, caplog):
    # bfloat16 autocast works on the CPU (the suite tests the amp path that way), so it is
    # allowed, but said: it is slower and less precise than float32 there.
    args = tiny(cifar_root, tmp_path, "optimizer=adam", "trainer.epochs=1", "trainer.amp=true")
    with caplog.at_level(logging.WARNING, logger="drsom"):
        assert run_inprocess(args) == "finished"
    warned = [r.getMessage() for r in caplog.records if "trainer.amp" in r.getMessage()]
    assert len(warned) == 1 and "bfloat16" in warned[0] and "\n" not in warned[0]


@pytest.mark.skipif(not UNWRITABLE.is_dir(), reason="needs /sys (Linux)")
def test_unwritable_results_dir_is_one_line(cifar_root, tmp_path):
    results = UNWRITABLE / "drsom-results"
    out = cli(*tiny(cifar_root, results, "optimizer=sgd", "trainer.epochs=1"), cwd=tmp_path)
    line = one_error_line(out)
    assert line.startswith(f"error: cannot write the run folder {results}/cifar10-cnn-sgd-"), line
    assert "(EPERM)" in line or "(EACCES)" in line or "(EROFS)" in line


@pytest.mark.skipif(not UNWRITABLE.is_dir(), reason="needs /sys (Linux)")
@pytest.mark.parametrize("multirun", [False, True], ids=["run", "multirun"])
def test_unwritable_working_directory_is_one_line(multirun, cifar_root, tmp_path):
    # Hydra makes its log folder under the working directory before any of our code runs.
    args = tiny(cifar_root, tmp_path / "r", "optimizer=sgd", "trainer.epochs=1")
    out = cli(*(["-m"] if multirun else []), *args, cwd=UNWRITABLE, run_dir=False)
    line = one_error_line(out)
    option = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    assert line.startswith(
        f"error: cannot create Hydra's log folder of this launch under {UNWRITABLE}"
    )
    assert f"{option}=<a writable folder>" in line
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------- checkpoints and summaries
def test_checkpoint_of_another_run_is_moved_aside(cifar_root, tmp_path, caplog):
    sgd = tiny(cifar_root, tmp_path / "sgd", "optimizer=sgd", "trainer.epochs=2")
    run_inprocess([*sgd, "trainer.stop_after_epochs=1"])
    drsom = tiny(cifar_root, tmp_path / "drsom", "optimizer=drsom", "trainer.epochs=2")
    run_inprocess([*drsom, "trainer.stop_after_epochs=1"])
    theirs, ours = only_run(tmp_path / "sgd"), only_run(tmp_path / "drsom")
    shutil.copyfile(theirs.checkpoint, ours.checkpoint)
    ours.previous_checkpoint.unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING, logger="drsom"):
        assert run_inprocess(drsom) == "finished"
    assert f"belongs to run {theirs.name}" in caplog.text and "moved to" in caplog.text
    assert (ours.path / "checkpoint.corrupt.pt").exists()
    assert summary_of(ours)["resumed_from_epoch"] == 0


def test_checkpoint_that_does_not_load_into_the_run_is_moved_aside_once(
    cifar_root, tmp_path, caplog
):
    # A readable checkpoint of another optimizer under this run's name: DRSOM's state dict
    # refuses it (KeyError: 'drsom'). It goes aside, the run starts over, reruns do not fail.
    sgd = tiny(cifar_root, tmp_path / "sgd", "optimizer=sgd", "trainer.epochs=2")
    run_inprocess([*sgd, "trainer.stop_after_epochs=1"])
    drsom = tiny(cifar_root, tmp_path / "drsom", "optimizer=drsom", "trainer.epochs=3")
    run_inprocess([*drsom, "trainer.stop_after_epochs=2"])  # checkpoints of epochs 1 and 2
    ours = only_run(tmp_path / "drsom")
    foreign = only_run(tmp_path / "sgd").load_checkpoint()
    torch.save({**foreign, "run_id": ours.name}, ours.checkpoint)
    with caplog.at_level(logging.WARNING, logger="drsom"):
        assert run_inprocess(drsom) == "finished"
    assert f"checkpoint {ours.checkpoint} does not fit this run" in caplog.text
    # the previous checkpoint (this run's own, epoch 1) is the one resumed
    assert "resuming from the previous checkpoint" in caplog.text
    summary = summary_of(ours)
    assert (summary["status"], summary["resumed_from_epoch"]) == ("finished", 1)
    assert run_inprocess(drsom) == "finished"  # skipped, no error


@pytest.mark.parametrize("content", ["[1]", '{"status": "finished"}', "{not json"])
def test_damaged_summary_is_read_as_absent_and_the_run_resumes(
    content, cifar_root, tmp_path, caplog
):
    args = tiny(cifar_root, tmp_path, "optimizer=sgd", "trainer.epochs=2")
    run_inprocess([*args, "trainer.stop_after_epochs=1"])
    rd = only_run(tmp_path)
    rd.summary.write_text(content)
    assert run_state(rd).status == "broken"  # a sweep's status probe says so, does not crash
    with caplog.at_level(logging.INFO, logger="drsom"):
        assert run_inprocess(args) == "finished"
    assert "resuming after epoch 1/2" in caplog.text
    summary = summary_of(rd)
    assert summary["status"] == "finished" and summary["final"]["test_acc"] is not None


# ------------------------------------------------------------------------------ compile
def check_compiled_run(cifar_root, tmp_path, *overrides: str) -> None:
    args = tiny(cifar_root, tmp_path, "trainer.compile=true", *overrides)
    assert run_inprocess([*args, "trainer.stop_after_epochs=1"]) == "interrupted"
    assert run_inprocess(args) == "finished"  # resumes: the checkpoint holds the plain model
    rd = only_run(tmp_path)
    summary = summary_of(rd)
    assert summary["compiled"] is True and summary["compile_note"] is None
    rows = read_csv(rd.metrics)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    model = rd.load_checkpoint()["trainer"]["model"]
    assert not any(k.startswith("_orig_mod.") for k in model)


@pytest.mark.parametrize("optimizer", ["drsom", "adam"])
def test_compiled_cnn_trains_and_resumes(optimizer, cifar_root, tmp_path):
    check_compiled_run(cifar_root, tmp_path, f"optimizer={optimizer}")


@pytest.mark.slow  # inductor compiles the ResNet's graphs on the CPU: minutes with a cold cache
def test_compiled_resnet_trains_and_resumes(cifar_root, tmp_path):
    check_compiled_run(
        cifar_root, tmp_path, "optimizer=drsom", "model=resnet18", "data.train_subset=64"
    )
