"""A tuning study as optuna stores it: where it lives, what it says about itself, who runs it.

Every study of ``hydra/sweeper=tuning`` is kept in the results store beside the runs it trained:
``<results_dir>/../studies/<study_name>.journal`` unless ``hydra.sweeper.storage`` names another
file (or an optuna database URL, ``sqlite:///...``, ``postgresql://...``). The default is optuna's
journal file storage: an append-only log of the study's operations, replayed by each reader. It
needs no server, several processes (the sweeper, and jobs reporting per-epoch values to a pruner)
can write it at once, and its lock is a symlink made atomically, which works on the NFS and Lustre
file systems of clusters where SQLite's locks do not.

A study records what it is (``describe``): its objective, its direction, its search space as
optuna distributions, and the trials' fixed config (the run identity of everything not searched).
A relaunch with anything else is refused (``StudyMismatch``) rather than mixing two studies'
trials under one sampler; a new ``hydra.sweeper.study_name`` starts another.

Who is running a trial: each launch holds a lock file in ``<study>.launches/`` for as long as it
runs (``Launch``) and marks the trials it asked for with its id. A ``RUNNING`` trial whose launch
holds no lock was left by a launch that died (killed, node lost): a relaunch takes it over and
trains it (its run resumes from its checkpoint). Asking is serialised by one more lock, so that two
launches at once never ask for more than the budget.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import uuid
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution
from optuna.trial import FrozenTrial, TrialState

from drsom.store.locks import hold_lock, lock_is_held

STUDIES = "studies"  # beside the store's runs: <results_dir>/../studies
TRIAL_VARIABLE = "DRSOM_TRIAL"  # how a job learns which trial it is (set by the sweeper)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # what the budget counts

optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweeper says what matters, once


class StudyMismatch(ValueError):
    """A relaunch whose study is not the stored one (one line)."""


def storage_spec(storage: str | None, study_name: str, results_dir: Path) -> str:
    """Where the study is stored: a database URL as given, else a journal file (absolute)."""
    if storage is None:
        return str(results_dir.parent / STUDIES / f"{study_name}.journal")
    if "://" in storage:
        return storage
    return str(Path(storage).expanduser().resolve())


def is_file(spec: str) -> bool:
    return "://" not in spec


def launches_dir(spec: str, study_name: str, results_dir: Path) -> Path:
    """The folder of the launches' lock files: beside a journal file, or in the store's studies."""
    if is_file(spec):
        return Path(f"{spec}.launches")
    return results_dir.parent / STUDIES / f"{study_name}.launches"


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    if not is_file(spec):
        return optuna.storages.get_storage(spec)
    from optuna.storages import JournalStorage

    from drsom.store.journal import JournalFile  # every record checked (JournalError, one line)

    Path(spec).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFile(spec))


def describe(
    objective: str, direction: str, space: Mapping[str, BaseDistribution], fixed: Mapping[str, Any]
) -> dict[str, Any]:
    """What a study is, as stored in its user attributes and compared on every relaunch."""
    return {
        "objective": objective,
        "direction": direction,
        "space": {k: distribution_to_json(d) for k, d in sorted(space.items())},
        "fixed": {k: json.dumps(v, sort_keys=True) for k, v in sorted(fixed.items())},
    }


def check_same(stored: Mapping[str, Any], wanted: Mapping[str, Any], study_name: str) -> None:
    """Raise StudyMismatch naming the first difference between the stored study and this one."""
    for what in ("objective", "direction"):
        if stored.get(what) != wanted[what]:
            raise StudyMismatch(
                f"study {study_name} was run with hydra.sweeper.{what}={stored.get(what)}, this "
                f"launch has {wanted[what]} (accepted: the stored value, or another "
                "hydra.sweeper.study_name for a new study)"
            )
    for what, name in (("space", "search space"), ("fixed", "fixed config")):
        old, new = stored.get(what) or {}, wanted[what]
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                raise StudyMismatch(
                    f"study {study_name} has another {name}: {key} was {_shown(old.get(key))}, "
                    f"this launch has {_shown(new.get(key))} (accepted: the stored {name}, or "
                    "another hydra.sweeper.study_name for a new study)"
                )


def _shown(value: str | None) -> str:
    if value is None:
        return "absent"
    with contextlib.suppress(ValueError, KeyError, TypeError):  # a distribution, as optuna says it
        return repr(json_to_distribution(value))
    return value


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} for every leaf of a nested mapping."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


# --------------------------------------------------------------------------- launches
class Launch:
    """This launch of a study: its lock file, held while it runs, and the lock for asking."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.id = uuid.uuid4().hex[:12]
        self.holder = f"pid {os.getpid()} on {socket.gethostname()}"
        self.path = folder / f"{self.id}.lock"
        self.held: contextlib.ExitStack | None = None

    @contextlib.contextmanager
    def running(self) -> Iterator[Launch]:
        with contextlib.ExitStack() as self.held:
            try:
                self._hold()
                yield self
            finally:
                self.path.unlink(missing_ok=True)

    def _hold(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.held.enter_context(hold_lock(self.path, self.holder))

    @contextlib.contextmanager
    def asking(self) -> Iterator[None]:
        """One launch at a time counts the study's trials and asks for new ones."""
        if self.held is not None and not self.path.exists():
            # removed while this launch ran (a tidy-up of the folder): made again, with this
            # launch's lock, or another launch would take this one's trials for abandoned
            self._hold()
            print(
                f"study launches folder {self.folder}: this launch's lock file was removed "
                "while it ran; made again",
                file=sys.stderr,
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        with hold_lock(self.folder / "ask.lock", self.holder):
            yield

    def alive(self, launch_id: str | None) -> bool:
        """Whether the launch that asked for a trial still runs (its lock is held)."""
        if launch_id is None:
            return False
        return bool(lock_is_held(self.folder / f"{launch_id}.lock"))


def trial_id(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial ``number`` of a study (what its per-trial calls take)."""
    study_id = storage.get_study_id_from_name(study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def tally(trials: list[FrozenTrial]) -> dict[TrialState, int]:
    return {s: sum(t.state == s for t in trials) for s in TrialState}


# --------------------------------------------------------------------------- in a job
def trial_pruner(pruner_node: Any) -> Callable[[int, float], bool] | None:
    """In a trial's job: report(epoch, validation accuracy) -> whether to stop (pruned).

    None unless the sweep has a pruner and the sweeper named the trial (``DRSOM_TRIAL``: the
    storage, the study and the trial's number, set per job through ``hydra.job.env_set``).
    """
    given = os.environ.get(TRIAL_VARIABLE)
    if pruner_node is None or not given:
        return None
    from hydra.utils import instantiate

    where = json.loads(given)
    storage = open_storage(where["storage"])
    study = optuna.load_study(
        study_name=where["study"], storage=storage, pruner=instantiate(pruner_node)
    )
    trial = optuna.trial.Trial(study, trial_id(storage, where["study"], where["number"]))

    def report(epoch: int, value: float) -> bool:
        with warnings.catch_warnings():  # a resumed run reports its last epoch again: ignored
            warnings.simplefilter("ignore")
            trial.report(value, epoch)
        return trial.should_prune()

    return report


# --------------------------------------------------------------------------- readers
def load_studies(path: Path) -> list[optuna.Study]:
    """Every study kept in the journal file ``path``."""
    storage = open_storage(str(path))
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    return [optuna.load_study(study_name=s.study_name, storage=storage) for s in summaries]


def disagreement(
    study: optuna.Study,
    scores: Mapping[str, tuple[str, float | None]],
    ignore: Collection[str] = (),
) -> str | None:
    """Where the study and the run store disagree (one line naming the run), or None.

    ``scores``: run id -> (status, score) as the store has them. Every complete trial's run is
    in the store with the score optuna was told, and every pruned trial's run is pruned. The runs
    in ``ignore`` (broken ones, reported as such by the store's reader) are not compared."""
    for t in study.get_trials(deepcopy=False, states=FINISHED_STATES):
        rid = t.user_attrs.get("run_id")
        if rid in ignore:
            continue
        if rid not in scores:
            return f"study {study.study_name}: trial {t.number}'s run {rid} is not in the store"
        status, score = scores[rid]
        if t.state == TrialState.PRUNED and status != "pruned":
            return f"study {study.study_name}: run {rid} is {status} in the store, pruned in it"
        if t.state == TrialState.COMPLETE and (score is None or abs(score - t.value) > 1e-12):
            return (
                f"study {study.study_name}: run {rid} scores {score} in the store, {t.value} in "
                f"the study (trial {t.number})"
            )
    return None


def load(storage: optuna.storages.BaseStorage, study_name: str) -> optuna.Study | None:
    """The stored study, or None where there is none."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no study of that name in the storage
        return None
