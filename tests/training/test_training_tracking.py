"""The tracker (drsom.training.tracking): logger modes, a killed wandb service, no home
directory."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from drsom.training.tracking import start_tracker

pytestmark = pytest.mark.usefixtures("one_thread", "no_scheduler_job")


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
from drsom.training.tracking import start_tracker
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
    environ = {**os.environ, "WANDB_MODE": "offline", **env}
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
