"""What ``summary.json`` says about a run: status, results, cost, and where it came from.

Statuses (``drsom.store.state.Status``): ``running`` (or killed while running), ``interrupted``
(stopped at an epoch boundary, resumable), ``finished``, ``diverged`` (non-finite training loss;
a result, not redone) and ``failed`` (an exception; rerunning resumes from the last checkpoint).
Provenance: ``git_commit``, ``git_dirty``, ``git_diff_sha`` and ``code_origin`` (``git_state``),
``threads`` and ``versions`` (``execution``), ``data_fingerprint`` (what was read).

Besides: ``checkpoint_epoch`` (the epoch the newest checkpoint holds: where a rerun resumes, also
after a failed write) and ``forced_by`` (the launch that cleared the folder for ``force=true``,
``drsom.job.runner.launch_identity``; its requeued jobs resume instead of clearing again).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from drsom import CODE_ROOT
from drsom.optim import hyperparameters
from drsom.store.identity import config_hash, group_name, run_id
from drsom.store.state import FINAL_KEYS, TERMINAL, metric_value, selected
from drsom.training.loop import Trainer

VERSIONED = ("drsom", "torch", "torchvision", "numpy", "pytorch_optimizer", "hydra-core", "wandb")


def start_summary(
    cfg: Mapping[str, Any],
    previous: Mapping[str, Any],
    trainer: Trainer,
    *,
    device: torch.device,
    wandb_id: str,
    compiled: bool,
    compile_note: str | None,
    data_fingerprint: str,
    backend: str | None = None,
) -> dict[str, Any]:
    """The summary of this attempt; ``previous`` is the last attempt's summary ({} if none);
    ``backend`` the torch.distributed backend of a run on several processes (else None)."""
    now = _now()
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine()
    summary = {
        "run_id": run_id(cfg),
        "status": "running",
        "experiment": cfg["experiment"],
        "data": cfg["data"]["name"],
        "model": cfg["model"]["name"],
        "optimizer": cfg["optimizer"]["label"],
        "seed": cfg["seed"],
        "config_hash": config_hash(cfg),
        "data_fingerprint": data_fingerprint,
        "group": group_name(cfg),
        "epochs": trainer.epochs,
        "attempts": _count(previous.get("attempts")) + 1,
        "resumed_from_epoch": trainer.epoch,
        "wandb_id": wandb_id,
        "device": str(device),
        "device_name": device_name,
        "amp": cfg["trainer"]["amp"],
        "processes": cfg["trainer"]["processes"],
        "backend": backend,
        "compiled": compiled,
        "compile_note": compile_note,
        "optimizer_hyperparameters": hyperparameters(trainer.optimizer),
        **git_state(),
        **execution(),
        "started_at": previous.get("started_at", now) if trainer.epoch else now,
    }
    record(summary, trainer, "running")
    return summary


# What ``final`` holds (the last epoch's row of these) is drsom.store.state.FINAL_KEYS, and the
# epoch validation selects is drsom.store.state.selected: the reader of summaries owns them.


def record(summary: dict[str, Any], trainer: Trainer, status: str, **extra: Any) -> None:
    """Bring ``summary`` up to date with the trainer's rows and counters."""
    rows = trainer.metrics
    last = rows[-1] if rows else {}
    summary.pop("best_test_acc", None)  # a summary written before selection moved to validation
    summary.pop("best_epoch", None)
    summary.update(
        status=status,
        epoch=trainer.epoch,
        step=trainer.step,
        final={k: metric_value(last.get(k)) for k in FINAL_KEYS},
        selected=selected(rows),
        train_seconds=trainer.seconds["train"],
        total_seconds=trainer.seconds["total"],
        counts=dict(trainer.counts),
        updated_at=_now(),
        **extra,
    )
    if status in TERMINAL:
        summary["ended_at"] = summary["updated_at"]
    note_load(summary)


def note_load(summary: dict[str, Any]) -> None:
    """Keep in ``load_max`` the highest 1-minute load average seen when the summary is updated
    (every epoch end) and the machine's cores: ``{"load_1min": 3.1, "cores": 2}``. A wall-clock
    figure says from it whether the run had the machine to itself (a load near the run's own
    threads) or shared it."""
    try:
        now = os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average on this system
        return
    seen = summary.get("load_max")
    before = seen.get("load_1min") if isinstance(seen, dict) else None
    peak = max(now, before) if isinstance(before, int | float) else now
    summary["load_max"] = {"load_1min": round(float(peak), 2), "cores": os.cpu_count()}


# What decides a run's numbers in the checkout: edits here (committed or not, new files too) make
# a tree dirty; the results store itself (results/) does not, or every run would dirty the next.
CODE_PATHS = (
    "drsom",  # the configs and experiments included (configs/ and experiments/ link into it)
    "hydra_plugins",
    "scripts",
    "run.py",
    "pyproject.toml",
)


def git_state(root: Path = CODE_ROOT) -> dict[str, Any]:
    """The commit of the code that ran (the checkout at ``root``, the folder holding this package),
    whether its code had edits (``git_dirty``), a hash of those edits (``git_diff_sha``: two dirty
    runs with the same hash ran the same code), and ``code_origin``: ``git checkout``, or why
    the three are None (``not a git checkout`` for an installed copy; ``git ...`` when git could
    not say).

    Git is asked about ``root`` itself, never about a folder above it: an installed copy in a
    virtual environment inside some checkout must not record that checkout's commit. And the
    environment's GIT_DIR, GIT_WORK_TREE, ... are left out, for the same reason.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", *args], cwd=root, env=env, capture_output=True, text=True, timeout=10
        )
        if out.returncode != 0:
            raise subprocess.SubprocessError(" ".join(out.stderr.split())[:200] or "failed")
        return out.stdout.strip()

    if not (root / ".git").exists():  # a folder (a worktree's or submodule's: a file)
        return _state(None, None, None, "not a git checkout")
    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return _state(None, None, None, "not a git checkout")
        commit = git("rev-parse", "HEAD")
        if not git("status", "--porcelain", "--", *CODE_PATHS):
            return _state(commit, False, None, "git checkout")
        diff = git("diff", "HEAD", "--", *CODE_PATHS)
        untracked = git("ls-files", "--others", "--exclude-standard", "--", *CODE_PATHS)
    except FileNotFoundError:
        return _state(None, None, None, "git is not installed")
    except (OSError, subprocess.SubprocessError) as exc:  # e.g. git's "dubious ownership"
        return _state(None, None, None, f"git could not say: {exc}")
    contents = [diff] + [_file_sha(root / name) for name in untracked.splitlines()]
    digest = hashlib.sha256("\n".join([untracked, *contents]).encode()).hexdigest()[:12]
    return _state(commit, True, digest, "git checkout")


def _state(commit: str | None, dirty: bool | None, diff_sha: str | None, origin: str) -> dict:
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "git_diff_sha": diff_sha,
        "code_origin": origin,
    }


def _file_sha(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def execution() -> dict[str, Any]:
    """What changes a run's numbers without being in its config: CPU threads (1 and 2 threads
    differ from the first epoch), the processor (``machine``), the interpreter and libraries
    (``versions``)."""
    return {"threads": torch.get_num_threads(), "machine": machine(), "versions": versions()}


def machine() -> dict[str, str]:
    """The processor and the kernels torch picks for it: float results differ between an AVX2
    and an AVX-512 CPU (and between math libraries), so bitwise reruns need the same ones."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                model,
            )
    except OSError:  # not Linux
        pass
    return {"cpu": model, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "torch_cuda": torch.version.cuda,
    }
    for pkg in VERSIONED:
        try:
            found[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            found[pkg] = None
    return found


def _count(value: Any) -> int:
    """A count read back from a summary that may have been edited or damaged: 0 if not one."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
