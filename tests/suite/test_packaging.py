"""``pip install .`` (not editable) gives a working library, runner and tools.

A wheel is built from a copy of the checkout (setuptools writes build/ and *.egg-info beside the
sources: never into the repository) and installed into a folder of its own. A virtual environment
then sees that folder and this environment's site-packages as plain path entries: the
dependencies import, but the ``.pth`` files there are not processed, so the editable install of
the checkout is invisible and every ``import drsom`` must come from the wheel. Everything runs
from a folder outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ("drsom-run", "drsom-figures", "drsom-tables", "drsom-curves", "drsom-reproduce")
COMMANDS += ("drsom-status", "drsom-export-wandb")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "local")
    for name in ("drsom", "hydra_plugins"):
        shutil.copytree(REPO / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    # A user's untracked cluster values (docs/cluster.md: configs/local/slurm.yaml) must stay out of
    # it.
    (src / "drsom" / "configs" / "local").mkdir()
    (src / "drsom" / "configs" / "local" / "slurm.yaml").write_text("partition: mine\n")

    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    dist, site = tmp / "dist", tmp / "site"
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)]
    subprocess.run(build, check=True, cwd=tmp, capture_output=True)
    (wheel,) = dist.glob("drsom-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    own = Path(subprocess.run([python, "-c", where], capture_output=True, text=True).stdout.strip())
    # The wheel first, then the dependencies (torch, hydra, ...) of this environment.
    (own / "deps.pth").write_text(f"{site}\n{sysconfig.get_paths()['purelib']}\n")

    # The whole folder a git checkout, as a virtual environment kept inside one: the installed
    # copy must still not record that checkout's commit as the code that ran.
    author = ["-c", "user.email=t@t", "-c", "user.name=t"]
    for args in (["init", "-q"], [*author, "commit", "-q", "--allow-empty", "-m", "around"]):
        if shutil.which("git"):  # without git no checkout can be claimed anyway
            subprocess.run(["git", "-C", str(tmp), *args], check=True, capture_output=True)

    work = tmp / "work"
    work.mkdir()
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ.update(WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    return SimpleNamespace(src=src, wheel=wheel, site=site, python=python, work=work, env=environ)


def run(installed: SimpleNamespace, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(installed.python), *args],
        cwd=installed.work,
        env=installed.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stderr[-3000:]}"
    return done


def test_the_wheel_holds_every_config_the_launcher_plugin_and_the_commands(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    configs = installed.src / "drsom" / "configs"
    shipped = {
        f"drsom/configs/{p.relative_to(configs).as_posix()}"
        for p in configs.rglob("*.yaml")
        if "local" not in p.relative_to(configs).parts
    }
    assert "drsom/configs/experiment/digits_drsom_vs_baselines_cnn.yaml" in shipped
    assert len(shipped) > 40  # the groups and the experiments, not just config.yaml
    assert shipped <= names, sorted(shipped - names)
    assert not [n for n in names if n.startswith("drsom/configs/local/")]
    assert "hydra_plugins/drsom_slurm_launcher/__init__.py" in names
    # A namespace package: an __init__.py would hide the submitit and joblib plugins.
    assert "hydra_plugins/__init__.py" not in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(installed.wheel).read(entry_points).decode()
    for command in COMMANDS:
        assert f"\n{command} = drsom." in text, command


def test_the_installed_library_and_launcher_plugin_import_from_the_wheel(installed):
    probe = """
import json, torch
import drsom
from drsom.optim import DRSOM
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
import hydra_plugins.drsom_slurm_launcher as plugin
from drsom.launch.slurm import job_setup

w = torch.nn.Parameter(torch.tensor([3.0, -2.0], dtype=torch.float64))
opt = DRSOM([w], hessian="hvp", directions="gradient")
opt.step(lambda: 0.5 * (w * w).sum())
launchers = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Launcher)}
print(json.dumps({"drsom": drsom.__file__, "plugin": plugin.__file__, "w": w.tolist(),
                  "launchers": sorted(launchers), "job_path": job_setup({})[0]}))
"""
    out = json.loads(run(installed, "-c", probe).stdout.splitlines()[-1])
    assert Path(out["drsom"]).is_relative_to(installed.site), out["drsom"]
    assert Path(out["plugin"]).is_relative_to(installed.site), out["plugin"]
    # a SLURM job imports the launcher class from the folder that holds both
    assert out["job_path"] == f"export PYTHONPATH={installed.site}${{PYTHONPATH:+:$PYTHONPATH}}"
    # f = |w|^2/2 with exact curvature: the trust-region step (radius lr = 1, the default, on the
    # gradient ray; |g| = |w| = sqrt(13) > 1) moves w by 1 towards 0: w (1 - 1/sqrt(13)).
    scale = 1 - 1 / 13**0.5
    assert out["w"] == pytest.approx([3.0 * scale, -2.0 * scale], rel=1e-9)
    assert "hydra_plugins.drsom_slurm_launcher.SlurmLauncher" in out["launchers"]
    # the dependencies' plugins share the namespace package
    assert (
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
        in (out["launchers"])
    )


def test_the_installed_runner_trains_into_the_current_directory(installed):
    command = str(installed.site / "bin" / "drsom-run")
    args = ["data=digits", "model=cnn", "optimizer=adam", "trainer.epochs=1"]
    args += ["logger.mode=disabled", "trainer.progress=false", "results_dir=store"]
    run(installed, command, *args)
    # relative results_dir: from the current directory (docs/usage.md, "Install as a library")
    (folder,) = (installed.work / "store").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["status"], summary["epoch"], summary["epochs"]) == ("finished", 1, 1)
    assert folder.name.startswith("digits-cnn-adam-")
    provenance = {
        k: summary.get(k) for k in ("git_commit", "git_dirty", "git_diff_sha", "code_origin")
    }
    assert provenance == {
        "git_commit": None,
        "git_dirty": None,
        "git_diff_sha": None,
        "code_origin": "not a git checkout",
    }
    assert list(installed.work.glob("outputs/*/*/run.log"))  # Hydra's log: cwd, job name "run"

    shown = run(installed, command, "--cfg", "hydra", "hydra/launcher=slurm").stdout
    assert "_target_: hydra_plugins.drsom_slurm_launcher.SlurmLauncher" in shown

    # an experiment shipped as package data, expanded by an installed tool, runs under cwd
    status = str(installed.site / "bin" / "drsom-status")
    listing = run(installed, status, "--experiment", "digits_drsom_vs_baselines_cnn").stdout
    store = installed.work / "results" / "runs"
    head = f"experiment digits_drsom_vs_baselines_cnn: 12 runs in {store}"
    assert listing.splitlines()[0] == head
    assert listing.splitlines()[-1].endswith(", 12 missing")
