"""Weights & Biases as a mirror of the local store.

The results store (``drsom.store.folder``) is the source of truth; wandb is a convenience that must
never cost a result. So:

* wandb is started inside the job (never in a launcher's parent process) and always finished in a
  ``finally``, also when the job fails, so runs of one multirun process cannot leak into each other;
* any wandb failure (import, init, network, log) becomes one warning, and training goes on with
  the tracker switched off;
* the wandb run id is stored with the run (summary and checkpoint) and reused on resume, so a
  requeued or re-launched job continues the same wandb run instead of starting a second one;
* the config is logged resolved and flattened (``trainer.epochs``, not nested or ``${...}``), and
  runs are grouped by the config hash without the seed;
* ``logger.mode`` is what wandb runs in: an explicit value wins over ``WANDB_MODE`` (which only
  sets its default, in configs/logger/wandb.yaml), and an invalid one is refused up front.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
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

    def final_values(self, data: Mapping[str, Any]) -> None:
        """The run's final numbers, shown in wandb's run table (wandb calls it the summary)."""
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
            _end_service()

    def _fail(self, what: str, exc: Exception) -> None:
        log.warning("wandb: %s failed (%s); continuing without wandb", what, _brief(exc))
        run, self._run = self._run, None
        with contextlib.suppress(Exception):
            run.finish(exit_code=1)
        _end_service()


def _end_service() -> None:
    """After a failure, end the connection to wandb's service process now, quietly.

    wandb tears it down in an exit hook; when the service has died (killed, out of memory), that
    hook prints a 25-line traceback at the very end of the job, after the one warning that
    already said wandb was off. Tearing down here unregisters the hook (a later run of the same
    process starts a new service); what this teardown raises about the dead service is expected.
    """
    with contextlib.suppress(Exception):
        import wandb

        wandb.teardown()


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
    mode = str(logger_cfg.get("mode", "offline"))  # checked by drsom.job.validate.validate
    if mode == "disabled":
        return Tracker()
    try:
        import wandb

        with _environment_for_wandb(mode, run_dir):
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
def _environment_for_wandb(mode: str, run_dir: Path) -> Iterator[None]:
    """The environment wandb.init (and the service process it starts) reads, during the call.

    * ``WANDB_MODE`` would override the ``mode`` passed to wandb.init, so it is set to it: the
      config (whose default *is* ``$WANDB_MODE``) has the last word.
    * Without ``HOME`` the service cannot place its log and cache and writes ~20 lines about it
      to the terminal; it gets the home folder Python itself falls back to (the user database),
      or, without one, a cache folder inside the run's wandb folder.
    """
    changes = {"WANDB_MODE": mode}
    if not os.environ.get("HOME") and not os.environ.get("XDG_CACHE_HOME"):
        try:
            import pwd  # POSIX only

            changes["HOME"] = pwd.getpwuid(os.getuid()).pw_dir
        except (ImportError, KeyError, OSError):
            changes["XDG_CACHE_HOME"] = str(Path(run_dir) / "wandb" / "cache")
    saved = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
