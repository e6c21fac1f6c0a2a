"""Weights & Biases as a mirror of the local store.

The store (``drsom.store``) is the source of truth; wandb is a convenience that must never cost a
result. So:

* wandb is started inside the job (never in a launcher's parent process) and always finished in a
  ``finally``, also when the job fails, so runs of one multirun process cannot leak into each other;
* any wandb failure (import, init, network, log) becomes one warning, and training goes on with
  the tracker switched off;
* the wandb run id is stored with the run (summary and checkpoint) and reused on resume, so a
  requeued or re-launched job continues the same wandb run instead of starting a second one;
* the config is logged resolved and flattened (``trainer.epochs``, not nested or ``${...}``), and
  runs are grouped by the config hash without the seed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WANDB_MODES = ("offline", "online", "disabled")


def new_wandb_id() -> str:
    return secrets.token_hex(6)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class Tracker:
    """Logs to a wandb run, or does nothing (mode disabled, or after a failure)."""

    def __init__(self, run: Any = None):
        self._run = run
        # A resumed run refuses steps below the ones it already has; those entries were logged by
        # the interrupted attempt (with the same values), so they are skipped quietly.
        self._first_step = int(getattr(run, "step", 0) or 0) if run is not None else 0

    @property
    def active(self) -> bool:
        return self._run is not None

    def log(self, data: Mapping[str, Any], step: int) -> None:
        if self._run is None or step < self._first_step:
            return
        clean = {k: v for k, v in data.items() if v is not None and not _is_nan(v)}
        try:
            self._run.log(clean, step=step)
        except Exception as exc:
            self._fail("log", exc)

    def summary(self, data: Mapping[str, Any]) -> None:
        if self._run is None:
            return
        try:
            self._run.summary.update({k: v for k, v in data.items() if v is not None})
        except Exception as exc:
            self._fail("summary update", exc)

    def finish(self, exit_code: int = 0) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as exc:
            log.warning("wandb: finish failed (%s); the local store is complete", _brief(exc))

    def _fail(self, what: str, exc: Exception) -> None:
        log.warning("wandb: %s failed (%s); continuing without wandb", what, _brief(exc))
        run, self._run = self._run, None
        with contextlib.suppress(Exception):
            run.finish(exit_code=1)


def start_tracker(
    logger_cfg: Mapping[str, Any],
    *,
    run_id: str,
    wandb_id: str,
    group: str,
    tags: list[str],
    config: Mapping[str, Any],
    run_dir: Path,
) -> Tracker:
    """A Tracker for this run; an inactive one (with a warning) when wandb cannot start."""
    mode = str(logger_cfg.get("mode", "offline"))
    if mode == "disabled":
        return Tracker()
    if mode not in WANDB_MODES:
        log.warning("wandb: logger.mode=%r is not one of %s; wandb is off", mode, WANDB_MODES)
        return Tracker()
    try:
        import wandb

        run = wandb.init(
            project=logger_cfg.get("project"),
            entity=logger_cfg.get("entity"),
            group=logger_cfg.get("group") or group,
            tags=sorted({*tags, *(logger_cfg.get("tags") or [])}),
            name=run_id,
            id=wandb_id,
            resume="allow",
            config=flatten(config),
            mode=mode,
            dir=str(run_dir),
            settings=wandb.Settings(
                init_timeout=float(logger_cfg.get("init_timeout", 60)), quiet=True
            ),
        )
    except Exception as exc:
        log.warning("wandb: could not start (%s); continuing without wandb", _brief(exc))
        return Tracker()
    return Tracker(run)


@contextlib.contextmanager
def tracking(logger_cfg: Mapping[str, Any], **kwargs: Any) -> Iterator[Tracker]:
    """``start_tracker`` whose run is finished however the block ends (exit code 1 on error)."""
    tracker = start_tracker(logger_cfg, **kwargs)
    try:
        yield tracker
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish(exit_code=0)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
