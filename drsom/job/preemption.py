"""Save before leaving: the cluster's preemption/time-out signal, deferred to a safe point.

SLURM signals a job ``signal_delay_s`` seconds before its time limit (submitit submits with
``--signal=USR2@<signal_delay_s>``) and, on clusters with ``preempt_send_user_signal``, when it is
preempted. submitit's handler for that signal calls the launcher's ``checkpoint()`` (for
hydra-submitit-launcher: "the same job with the same arguments"), requeues the job and exits,
wherever the training loop happens to be. Our state lives in the run folder, not in the pickled
job, so exiting there would lose every step since the last epoch checkpoint.

``PreemptionGuard`` defers that handler. While a run trains, the signal only sets ``requested``;
the training loop looks at it after every step, and the runner then writes a checkpoint with the
position inside the epoch, records the run as interrupted, finishes the wandb run and releases the
run folder. Only then does ``hand_over()`` do what the signal would have done without the guard:
submitit's handler (requeue, exit; the requeued job finds the same run folder and resumes), or for a
plain process the signal's default action (it ends). If no safe point comes within ``grace_s`` (a
step or an evaluation longer than that), a repeat of the signal hands over at once, and the
requeued job continues from the last complete checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("drsom")

PREEMPT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"  # submitit's own setting; USR2 when unset
GRACE_S = 60.0  # well inside the 120 s that hydra/launcher/slurm.yaml leaves before the kill
# One preemption can arrive more than once within moments: `scancel --full -s USR2` signals the
# batch shell, which passes it on (drsom/launch/slurm.py), and srun, which forwards it too. A repeat
# this soon after the first is that same request, not a user insisting.
DUPLICATE_S = 5.0


def preemption_signal() -> signal.Signals | None:
    """The signal submitit treats as "preempted or about to time out" (None: not on this OS)."""
    name = os.environ.get(PREEMPT_SIGNAL_ENV, "USR2").upper().removeprefix("SIG")
    return getattr(signal.Signals, f"SIG{name}", None)  # Windows has no SIGUSR2


class PreemptionGuard:
    """Context manager: while active, the preemption signal is noted, not acted upon.

    Signal handlers can only be set from the main thread; elsewhere (a thread-based launcher),
    and where the signal does not exist, the guard does nothing.
    """

    def __init__(self, signum: int | None = None, grace_s: float = GRACE_S):
        self.signum = signal.Signals(signum) if signum is not None else preemption_signal()
        self.grace_s = grace_s
        self.requested = False
        self._previous: Callable[..., Any] | int | None = None
        self._installed = False
        self._timer: threading.Timer | None = None
        self._first_at = 0.0

    @property
    def name(self) -> str:
        return self.signum.name if self.signum is not None else "no preemption signal"

    def __enter__(self) -> PreemptionGuard:
        if self.signum is None or threading.current_thread() is not threading.main_thread():
            return self
        previous = signal.getsignal(self.signum)
        if previous == signal.SIG_IGN:  # ignored on purpose by whoever started us: leave it so
            return self
        # None: a handler set outside Python; the closest thing to put back is the default.
        self._previous = signal.SIG_DFL if previous is None else previous
        signal.signal(self.signum, self._on_signal)
        self._installed = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._installed:
            signal.signal(self.signum, self._previous)
            self._installed = False

    def _on_signal(self, signum: int, frame: Any) -> None:
        since_first = time.monotonic() - self._first_at
        if self.requested and since_first < min(DUPLICATE_S, self.grace_s / 2):
            return  # the same preemption delivered twice
        if self.requested:  # the repeat sent after grace_s (or by a user): stop waiting
            log.warning(f"{self.name} again before a safe point: handing over without saving")
            self.hand_over()
            return
        self.requested = True
        self._first_at = time.monotonic()
        log.warning(
            f"received {self.name} (preemption or time limit): saving a checkpoint after the "
            f"current step, then {self._what_next()}"
        )
        # A timer thread cannot interrupt the main thread; a signal can, and lands right here.
        self._timer = threading.Timer(self.grace_s, os.kill, (os.getpid(), signum))
        self._timer.daemon = True
        self._timer.start()

    def agree(self) -> None:
        """Act on the signal as if it had come here: it reached another process of the run, and
        the processes stopped together (the state is saved)."""
        if not self.requested:
            self.requested, self._first_at = True, time.monotonic()

    def _what_next(self) -> str:
        if callable(self._previous):
            return "handing the job back to the launcher (submitit requeues it)"
        return "exiting"

    def hand_over(self) -> None:
        """Do what the signal would have done without the guard (call once the state is saved).

        submitit's handler requeues the job and raises SystemExit; the default action of the
        signal ends the process.
        """
        if not self.requested:
            return
        previous = self._previous
        self._restore()
        if callable(previous):
            previous(self.signum, None)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(self.signum)
