"""One launch's attempt at a run, as the store sees it: the run folder's life cycle in one place.

``Attempt(run_dir, force, launch)`` refuses a path that holds no folder; ``result`` says whether the
run is a result already (then it is not trained again); ``held()`` locks the folder for the attempt
and says it again under the lock, and within it ``begin()`` clears what earlier attempts left
(temporaries of writes a kill cut short; everything, for ``force=true``, once per launch) and
``started`` records the attempt's first summary and config. A config check that fails inside
``held()`` removes the folders this launch made (a refused run leaves none); a write the filesystem
refuses is one ``StorageError`` line.

``force=true`` discards what the folder held when the run was launched, once per launch: the
launch that cleared it is recorded in the summary (``forced_by``), and its requeued job (the same
launch identity, ``drsom.job.runner.launch_identity``) resumes from the checkpoint it wrote
instead of starting over on every requeue.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from drsom.cfg.checks import ConfigError
from drsom.paths import shown
from drsom.store.folder import RunDir, StorageError, describe_os_error, storage_cause
from drsom.store.state import TERMINAL, Status, run_state

log = logging.getLogger("drsom")


class Attempt:
    """This launch's attempt at the run stored in ``run_dir``; ``force``: the config's
    ``force``, ``launch``: the launch's identity (None: every launch is a new one)."""

    def __init__(self, run_dir: RunDir, force: bool, launch: str | None) -> None:
        run_dir.check_is_folder()  # a file or a broken link there holds no run
        self.run_dir, self.asked, self.launch = run_dir, force, launch
        self.force = force  # whether this attempt clears the folder (``held`` decides)
        self.previous: dict[str, Any] = {}  # the last attempt's summary (``begin``)

    def forced_now(self) -> bool:
        """Whether ``force=true`` still has to clear the folder: not when this launch did."""
        if not self.asked or self.launch is None:
            return self.asked
        summary = self.run_dir.read_summary() or {}
        return summary.get("forced_by") != self.launch

    def result(self, fingerprint: str, commit: Callable[[], str | None]) -> str | None:
        """The run's status when it is a result already (said in one line; not trained again),
        else None. A result made on other data than ``fingerprint`` (a smoke test on a small copy
        of the dataset, then the real one) is refused in one line, never taken for this run's;
        one made at another commit than ``commit()`` is kept, with a warning."""
        return None if self.forced_now() else self._stored_result(fingerprint, commit)

    def _stored_result(self, fingerprint: str, commit: Callable[[], str | None]) -> str | None:
        """``result`` of a folder that force=true does not clear now."""
        run_dir = self.run_dir
        state = run_state(run_dir)
        if state.status == Status.BROKEN:
            log.warning(f"run {run_dir.name}: {state.problem}; resuming it from its checkpoint")
            return None
        if state.status not in TERMINAL:
            return None
        summary = state.summary
        made_on = summary.get("data_fingerprint")
        if made_on and made_on != fingerprint:
            raise ConfigError(
                f"run {run_dir.name} in {shown(run_dir.path)} was made on other data (train+test "
                f"images:hash {made_on}) than this config reads now ({fingerprint}); set "
                "results_dir elsewhere, or force=true to replace it"
            )
        what = _result_line(summary)
        if what is None:  # e.g. {"status": "finished"} alone: not a result; the checkpoint says
            log.warning(f"{run_dir.summary} is incomplete: resuming the run from its checkpoint")
            return None
        log.info(
            f"run {run_dir.name} already {summary['status']} ({what}) in {run_dir.path}; "
            "force=true runs it again"
        )
        made_at, now = summary.get("git_commit"), commit()
        if made_at and now and made_at != now:
            log.warning(
                f"run {run_dir.name} was made at commit {made_at[:10]}, this code is {now[:10]}: "
                "kept as a result; force=true reruns it with this code, "
                f"drsom-reproduce {run_dir.path} checks whether it still reproduces"
            )
        return summary["status"]

    @contextlib.contextmanager
    def held(self, fingerprint: str, commit: Callable[[], str | None]) -> Iterator[str | None]:
        """The folder locked for this attempt (one process per run); yields ``result`` read
        again under the lock (another process may have finished the run meanwhile). See the
        module docstring for what a failure inside does."""
        run_dir = self.run_dir
        # the folders this launch would make (the run's, and results_dir's own when it is new)
        fresh = [p for p in (run_dir.path, *run_dir.path.parents) if not p.exists()]
        with run_dir.locked():
            self.force = self.forced_now()  # again: the folder may have changed
            if self.asked and not self.force:
                log.info(
                    f"force=true was applied by this launch already ({self.launch}): not clearing"
                )
            done = None if self.force else self._stored_result(fingerprint, commit)
            try:
                yield done
            except ConfigError:
                # a check that needs the folder's lock (the model's shape check) failed before
                # anything was written: the folder this launch made goes again (docs/store.md: a
                # refused run makes no folder); still holding the lock, so no other process is
                # in it
                if fresh:
                    run_dir.remove_if_unused(fresh[1:])
                raise
            except StorageError:
                raise
            except OSError as exc:  # e.g. a temporary or old file that cannot be removed
                cause = storage_cause(exc)
                if cause is None:
                    raise
                raise StorageError(
                    f"cannot write in the run folder {shown(run_dir.path)}: "
                    f"{describe_os_error(cause)}"
                ) from exc

    def begin(self) -> None:
        """Clear what earlier attempts left (inside ``held``), and keep their summary."""
        self.run_dir.remove_temporaries()  # of writes cut short by a kill; we hold the lock
        if self.force:
            self.run_dir.clear()
        self.previous = self.run_dir.read_summary() or {}

    def started(
        self, summary: dict[str, Any], config: Mapping[str, Any], checkpoint_epoch: int | None
    ) -> None:
        """Record the attempt's first ``summary`` (with who forced the folder, and the epoch of the
        checkpoint it resumed from) and its ``config``."""
        summary["forced_by"] = self.launch if self.force else self.previous.get("forced_by")
        summary["checkpoint_epoch"] = checkpoint_epoch
        self.run_dir.write_config(config)
        self.run_dir.write_summary(summary)

    def fresh_tables(self) -> None:
        """Remove the tables of an attempt that saved no state: the run starts over."""
        for path in (self.run_dir.metrics, self.run_dir.steps):
            path.unlink(missing_ok=True)


def _result_line(summary: dict) -> str | None:
    """``test_acc 0.9 after epoch 2`` / ``in epoch 3`` of a terminal summary; None if incomplete."""
    try:
        if summary["status"] == "diverged":
            return f"in epoch {int(summary['diverged_epoch'])}"
        return f"test_acc {float(summary['final']['test_acc']):.4f} after epoch {summary['epoch']}"
    except (KeyError, TypeError, ValueError):
        return None
