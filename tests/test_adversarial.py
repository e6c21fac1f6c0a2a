"""The runner against an adversarial user: what broke once, each with the behaviour it has now.

A bad value is one line naming the key and what is accepted, a non-zero exit, and no run folder;
a full disk or a read-only folder is one line that leaves the last good checkpoint and a truthful
summary; a checkpoint or summary that does not fit the run is reported and set aside; compiled
models train; ``force=true`` clears a run once per launch, not on every requeue; wandb's failures
are one warning. Runs are seconds long on a fake CIFAR-10 under tmp_path; wandb never reaches the
network (disabled, offline, or a fake module).
"""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from run_helpers import only_run, read_csv, run_inprocess, summary_of, tiny

from drsom import jobs, run_folder, runner
from drsom.config import ConfigError, validate
from drsom.identity import complete
from drsom.run_folder import StorageError
from drsom.run_state import run_state
from drsom.tracking import start_tracker

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread", "no_scheduler_job")


def cli(*args: str, cwd: Path, env: dict | None = None, run_dir: bool = True):
    environ = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    environ.pop("HYDRA_FULL_ERROR", None)
    environ.update(env or {})
    hydra_dir = [f"hydra.run.dir={cwd / 'hydra'}"] if run_dir else []
    return subprocess.run(
        [sys.executable, str(REPO / "run.py"), *hydra_dir, *args],
        cwd=cwd,
        env={k: v for k, v in environ.items() if v is not None},
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_error_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode != 0, out.stdout + out.stderr
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


# ---------------------------------------------------------------------------- full disk
class FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes and then fails as a full disk does."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def fill_disk_after_checkpoints(monkeypatch, good: int, no_new_files: bool = False) -> None:
    """The first ``good`` checkpoint saves succeed; then torch.save meets a full disk.

    ``no_new_files``: from then on no new file can be made at all (not even the summary's).
    """
    real_save, real_mkstemp, calls = torch.save, run_folder.tempfile.mkstemp, []

    def save(obj, f):
        calls.append(1)
        real_save(obj, f if len(calls) <= good else FullDisk(f, room=1000))

    def mkstemp(*args, **kwargs):
        if no_new_files and len(calls) > good:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(run_folder.torch, "save", save)
    monkeypatch.setattr(run_folder.tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("summary_fits", [True, False], ids=["summary-written", "summary-too"])
def test_full_disk_is_one_line_keeps_the_last_checkpoint_and_says_failed(
    summary_fits, cifar_root, tmp_path, monkeypatch
):
    args = tiny(cifar_root, tmp_path, "optimizer=adam", "trainer.epochs=3")
    # summary-too: not even the summary fits as a new file; it is rewritten in place
    fill_disk_after_checkpoints(monkeypatch, good=1, no_new_files=not summary_fits)
    with pytest.raises(StorageError) as err:
        run_inprocess(args)
    message = str(err.value)
    assert "\n" not in message and "No space left on device (ENOSPC)" in message
    assert "checkpoint.pt) holds epoch 1" in message and "summary.json says failed" in message
    rd = only_run(tmp_path)
    assert rd.load_checkpoint()["trainer"]["epoch"] == 1  # the last good one, whole
    assert not list(rd.path.glob(".*.tmp"))
    summary = summary_of(rd)
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert summary["checkpoint_epoch"] == 1 and "unexpected pos" not in summary["error"]

    monkeypatch.undo()  # room again: the same command resumes from epoch 1
    assert run_inprocess(args) == "finished"
    summary = summary_of(rd)
    assert (summary["resumed_from_epoch"], summary["epoch"]) == (1, 3)
    assert [r["epoch"] for r in read_csv(rd.metrics)] == ["1", "2", "3"]


def test_full_disk_reaches_the_command_line_as_one_line(cifar_root, tmp_path, monkeypatch):
    fill_disk_after_checkpoints(monkeypatch, good=0)
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=tiny(cifar_root, tmp_path, "optimizer=sgd"))
    with pytest.raises(SystemExit) as exit_:
        jobs.run(cfg, base_dir=tmp_path)
    message = str(exit_.value.code)
    assert message.startswith("error: cannot write ") and "\n" not in message
    assert "no checkpoint was saved yet" in message


def test_read_only_run_folder_is_one_line(cifar_root, tmp_path, monkeypatch):
    args = tiny(cifar_root, tmp_path, "optimizer=sgd", "trainer.epochs=2")
    run_inprocess([*args, "trainer.stop_after_epochs=1"])
    rd = only_run(tmp_path)
    before = {p.name: p.read_bytes() for p in rd.path.iterdir() if p.is_file()}

    def read_only(*a, **kw):  # what mkstemp meets on a read-only mount (root ignores chmod)
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(run_folder.tempfile, "mkstemp", read_only)
    with pytest.raises(StorageError) as err:
        run_inprocess(args)
    message = str(err.value)
    assert message.startswith(f"cannot write {rd.path}/") and "(EROFS)" in message
    assert "\n" not in message
    after = {p.name: p.read_bytes() for p in rd.path.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"
    }


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


# ------------------------------------------------------------------ force and requeues
def test_force_clears_once_per_launch_not_on_every_requeue(cifar_root, tmp_path, monkeypatch):
    args = tiny(cifar_root, tmp_path, "optimizer=sgd", "trainer.epochs=2")
    assert run_inprocess(args) == "finished"
    rd = only_run(tmp_path)
    done = summary_of(rd)

    # A forced launch (SLURM job 11) is preempted after epoch 1 ...
    monkeypatch.setenv("SLURM_JOB_ID", "11")
    forced = [*args, "force=true"]
    assert run_inprocess([*forced, "trainer.stop_after_epochs=1"]) == "interrupted"
    first = summary_of(rd)
    assert first["attempts"] == 1 and first["wandb_id"] != done["wandb_id"]
    assert first["forced_by"] == runner.launch_identity() == "slurm job 11"
    # ... and its requeued job (same job id, same pickled config) resumes instead of clearing.
    assert run_inprocess(forced) == "finished"
    requeued = summary_of(rd)
    assert (requeued["attempts"], requeued["resumed_from_epoch"]) == (2, 1)
    assert requeued["wandb_id"] == first["wandb_id"] and requeued["forced_by"] == "slurm job 11"
    assert run_inprocess(forced) == "finished"  # once more in the same job: already done
    assert summary_of(rd)["attempts"] == 2

    monkeypatch.setenv("SLURM_JOB_ID", "12")  # a new launch with force=true clears again
    assert run_inprocess(forced) == "finished"
    again = summary_of(rd)
    assert (again["attempts"], again["resumed_from_epoch"]) == (1, 0)
    assert again["forced_by"] == "slurm job 12" and again["wandb_id"] != first["wandb_id"]


def test_launch_identity_follows_the_scheduler_and_hydras_output_folder(monkeypatch):
    assert runner.launch_identity() is None  # nothing requeues a plain process
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")
    assert runner.launch_identity() == "submitit-local job 4242"
    monkeypatch.setenv("SLURM_JOB_ID", "900")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "899")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert runner.launch_identity() == "slurm job 899_3"

    from hydra.core.hydra_config import HydraConfig

    fake = types.SimpleNamespace(runtime=types.SimpleNamespace(output_dir="/multirun/x/3"))
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: fake))
    assert runner.launch_identity() == "slurm job 899_3, output /multirun/x/3"


# -------------------------------------------------------------------------------- wandb
def test_explicit_logger_mode_wins_over_wandb_mode(monkeypatch, tmp_path):
    seen: list[str | None] = []

    def init(**kwargs):
        seen.append(os.environ.get("WANDB_MODE"))
        raise RuntimeError("stop here")

    monkeypatch.setitem(
        sys.modules, "wandb", types.SimpleNamespace(init=init, Settings=lambda **kw: kw)
    )
    monkeypatch.setenv("WANDB_MODE", "bogus")
    tracker = start_tracker(
        {"mode": "offline"},
        run_id="r",
        wandb_id="w",
        group="g",
        tags=[],
        config={},
        run_dir=tmp_path,
    )
    assert not tracker.active and seen == ["offline"]
    assert os.environ["WANDB_MODE"] == "bogus"  # only for the call


WANDB_SCRIPT = """
import logging, os, signal, sys, time
from pathlib import Path
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from drsom.tracking import start_tracker
run_dir = Path(sys.argv[1])
run_dir.mkdir()
tracker = start_tracker(
    {"mode": "offline", "project": "p"}, run_id="r", wandb_id="abc123", group="g", tags=[],
    config={"a": 1}, run_dir=run_dir,
)
assert tracker.active
tracker.log({"x": 1.0}, step=1)
if sys.argv[2] == "kill":
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # a child: wandb's service process
            os.kill(int(stat.parent.name), signal.SIGKILL)
    time.sleep(1.0)
    for step in range(2, 6):
        tracker.log({"x": float(step)}, step=step)
tracker.finish()
print("done")
"""


def wandb_script(tmp_path: Path, how: str, env: dict) -> subprocess.CompletedProcess:
    pytest.importorskip("wandb")
    script = tmp_path / "script.py"
    script.write_text(WANDB_SCRIPT)
    # WANDB_SERVICE: left in this process's environment by an earlier test's wandb run; the
    # script must start (and here kill) a service of its own, whatever ran before it
    environ = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", **env}
    environ["WANDB_SERVICE"] = None
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run"), how],
        env={k: v for k, v in environ.items() if v is not None},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the service via /proc")
def test_killed_wandb_service_is_one_warning_and_a_quiet_exit(tmp_path):
    out = wandb_script(tmp_path, "kill", {})
    assert out.returncode == 0 and out.stdout.strip().endswith("done"), out.stderr
    ours = [line for line in out.stderr.splitlines() if line.startswith("wandb: log failed")]
    assert len(ours) == 1, out.stderr
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr


def test_wandb_without_home_is_quiet(tmp_path):
    out = wandb_script(tmp_path, "plain", {"HOME": None, "XDG_CACHE_HOME": None})
    assert out.returncode == 0 and out.stdout.strip().endswith("done"), out.stderr
    core = [line for line in out.stderr.splitlines() if " INFO " in line or " ERROR " in line]
    assert len(core) <= 1, out.stderr
    assert "Traceback" not in out.stderr
