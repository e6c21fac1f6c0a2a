"""The tuning sweeper (``hydra/sweeper=tuning``): optuna's ask and tell around Hydra's launchers.

Why our own: hydra-optuna-sweeper, the plugin this replaced, pins optuna below 3, ends a study at
the first failed trial (it tells optuna a NaN, which optuna refuses) and cannot store a study on
the SQLAlchemy that installs beside it. This sweeper drives optuna (4 and later) directly:

1. check everything before anything trains (``drsom.launch.tuning``; one line, exit 2);
2. open the stored study (``drsom.store.study``), or create it; refuse one made by another search
space,
   objective or fixed config, or a budget below its finished trials;
3. in batches of ``n_jobs``: take over the trials that a dead launch left running, ask optuna for
   new ones up to the budget (trial ``k`` is drawn with the sampler seeded ``seed + k``: a
   relaunch never repeats a draw, and a study interrupted and relaunched proposes what an
   uninterrupted one would), launch them together through the configured launcher (basic, joblib,
   SLURM), and tell optuna each result: COMPLETE with the trial's score, PRUNED, or FAIL for a
   trial that raised, was killed, or whose run another process holds;
4. stop when the budget's trials (complete or pruned) are done, or when failed trials pass
   ``max_failure_rate`` of the budget (one line naming their runs, exit 1).

Each trial is an ordinary run of the results store: its run id comes from its config, a finished
one is never trained again, an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

# optuna imports alembic, whose plugins log a line each at INFO (Hydra's level) on import
logging.getLogger("alembic").setLevel(logging.WARNING)

import optuna  # noqa: E402
from optuna.distributions import (  # noqa: E402
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from drsom.launch.tuning import (  # noqa: E402
    OBJECTIVES,
    TuningError,
    check_budget,
    check_search_space,
    check_validation_split,
)
from drsom.paths import try_write  # noqa: E402
from drsom.store import study as stored  # noqa: E402
from drsom.store.journal import JournalError  # noqa: E402
from drsom.store.locks import hold_lock  # noqa: E402

log = logging.getLogger("drsom")
DIRECTIONS = ("maximize", "minimize")


@dataclass
class Plan:
    """What a launch of a study will do, settled by the checks."""

    space: dict[str, BaseDistribution]
    fixed: list[str]  # overrides every trial gets: the command line's and the search file's
    record: dict[str, Any]  # what the study is (drsom.store.study.describe)
    storage: str
    launches: Path
    sampler: DictConfig
    pruner: DictConfig | None
    backend: Any = None  # the opened storage (``open``)
    job_index: int = 0


class TuningSweeper(Sweeper):
    def __init__(
        self,
        *,
        objective: str = "final",
        direction: str = "maximize",
        n_trials: int = 8,
        n_jobs: int = 1,
        max_failure_rate: float = 0.25,
        study_name: str | None = None,
        storage: str | None = None,
        sampler: Any = None,
        pruner: Any = None,
        params: Any = None,
    ) -> None:
        self.objective, self.direction = objective, direction
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.study_name, self.storage = study_name, storage
        self.sampler_node, self.pruner_node = sampler, pruner
        self.params = dict(params or {})

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context, self.launch_config = hydra_context, config
        self.base_dir = Path(getattr(task_function, "base_dir", None) or Path.cwd())
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ------------------------------------------------------------------------------ sweep
    def sweep(self, arguments: list[str]) -> None:
        try:
            plan = self.check(arguments)
            study = self.open(plan)
        except ValueError as exc:  # TuningError, StudyMismatch, JournalError, the run's config
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        try:
            self.optimize(study, plan)
        except JournalError as exc:  # damaged by someone else while this launch ran
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    def optimize(self, study: optuna.Study, plan: Plan) -> None:
        launch = stored.Launch(plan.launches)
        storage = plan.backend
        with launch.running():
            while True:
                with launch.asking():
                    trials = study.get_trials(deepcopy=False)
                    done = [t for t in trials if t.state in stored.FINISHED_STATES]
                    if len(done) >= self.n_trials:
                        break
                    self.check_failures(study.study_name, trials)
                    running = [t for t in trials if t.state == TrialState.RUNNING]
                    left = [t for t in running if not launch.alive(t.user_attrs.get("launch"))]
                    adopted = left[: self.n_jobs]
                    for t in adopted:
                        tid = stored.trial_id(storage, study.study_name, t.number)
                        storage.set_trial_user_attr(tid, "launch", launch.id)
                        log.info(
                            f"trial {t.number} ({t.user_attrs.get('run_id')}): left running "
                            "by a launch that ended; training it here"
                        )
                    wanted = min(
                        self.n_jobs - len(adopted), self.n_trials - len(done) - len(running)
                    )
                    new = [self.ask(study, plan, launch) for _ in range(max(wanted, 0))]
                batch = [(t.number, t.user_attrs["overrides"], True) for t in adopted]
                batch += [(n, overrides, False) for n, overrides in new]
                if not batch:
                    busy = len(running) - len(adopted)
                    log.info(
                        f"study {study.study_name}: the last {busy} trial(s) of the budget are "
                        "being trained by another launch, which completes the study"
                    )
                    break
                returns = self.launcher.launch(
                    [self.job_overrides(plan, study.study_name, n, o) for n, o, _ in batch],
                    initial_job_idx=plan.job_index,
                )
                plan.job_index += len(batch)
                for (number, _, adopted_here), ret in zip(batch, returns, strict=True):
                    self.tell(study, plan, number, ret, adopted_here)
        self.report(study)

    # ------------------------------------------------------------------------------ checks
    def check_settings(self) -> tuple[DictConfig, DictConfig | None]:
        """The sweeper's own values, before any config is read: (sampler node, pruner node)."""
        if self.objective not in OBJECTIVES:
            raise TuningError(
                f"hydra.sweeper.objective={self.objective!r}: accepted: {', '.join(OBJECTIVES)}"
            )
        if self.direction not in DIRECTIONS:
            raise TuningError(
                f"hydra.sweeper.direction={self.direction!r}: accepted: {', '.join(DIRECTIONS)}"
            )
        check_budget(self.n_trials)
        if isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, int) or self.n_jobs < 1:
            raise TuningError(
                f"hydra.sweeper.n_jobs={self.n_jobs!r}: accepted: a positive number of trials "
                "launched at a time"
            )
        rate = self.max_failure_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise TuningError(
                f"hydra.sweeper.max_failure_rate={rate!r}: accepted: a share of the budget in "
                "[0, 1] (failed trials beyond it end the study)"
            )
        sampler = self._plugin("sampler", self.sampler_node, optuna.samplers.BaseSampler)
        return sampler, self._plugin("pruner", self.pruner_node, optuna.pruners.BasePruner)

    def check(self, arguments: list[str]) -> Plan:
        sampler, pruner = self.check_settings()
        parser, loader = OverridesParser.create(), self.hydra_context.config_loader
        command = parser.parse_overrides(arguments)
        fixed = [p.input_line for p in command if not p.is_sweep_override()]
        job = loader.load_sweep_config(self.launch_config, fixed)
        space = {**self._search_file(job, fixed), **self.params}
        params = parser.parse_overrides([f"{k}={v}" for k, v in space.items()] + list(arguments))
        check_search_space(params, job)
        check_validation_split(job)
        from drsom.job.validate import ConfigError, check_results_dir, validate
        from drsom.store.identity import complete, identity

        plain = _run_config(job)
        try:
            validate(complete(plain))
            results_dir = check_results_dir(plain["results_dir"], self.base_dir)  # its studies
        except ConfigError as exc:
            raise TuningError(str(exc)) from None

        swept = {p.get_key_element(): p for p in params if p.is_sweep_override()}
        distributions = {key: distribution(p) for key, p in swept.items()}
        fixed_space = [p.input_line for p in params if not p.is_sweep_override()]
        fixed_space = [line for line in fixed_space if line not in fixed]
        same = stored.flatten(identity(complete(plain)))
        same = {k: v for k, v in same.items() if k not in swept} | {"seed": plain["seed"]}
        name = self.study_name or f"{plain['experiment']}-{plain['optimizer']['label']}"
        self.study_name = name
        spec = stored.storage_spec(self.storage, name, results_dir)
        if stored.is_file(spec):
            check_writable(Path(spec))
        return Plan(
            space=distributions,
            fixed=[*fixed, *fixed_space],
            record=stored.describe(self.objective, self.direction, distributions, same),
            storage=spec,
            launches=stored.launches_dir(spec, name, results_dir),
            sampler=sampler,
            pruner=pruner,
        )

    def _plugin(self, key: str, node: Any, kind: type) -> Any:
        """The sampler's or pruner's ``_target_`` node, once instantiated to check what it is."""
        if node is None:
            if key == "sampler":
                raise TuningError("hydra.sweeper.sampler=null: accepted: an optuna sampler node")
            return None
        from hydra.utils import instantiate

        example = "TPESampler" if key == "sampler" else "MedianPruner"
        accepted = f"a _target_ node of optuna.{key}s, e.g. optuna.{key}s.{example}"
        try:
            made = instantiate(node)
        except Exception as exc:
            cause = exc.__cause__ or exc
            raise TuningError(
                f"hydra.sweeper.{key}: {' '.join(str(cause).split())[:200]} (accepted: {accepted})"
            ) from None
        if not isinstance(made, kind):
            target = node.get("_target_") if isinstance(node, DictConfig) else node
            raise TuningError(
                f"hydra.sweeper.{key}._target_={target}: not an optuna {key} (accepted: {accepted})"
            )
        return node

    def _search_file(self, job: DictConfig, fixed: list[str]) -> dict[str, str]:
        """configs/search/<optimizer>.yaml of the launch's optimizer ({} when there is none)."""
        from hydra.errors import ConfigCompositionException, MissingConfigException

        choice = job.hydra.runtime.choices.get("optimizer")
        try:
            found = self.hydra_context.config_loader.load_sweep_config(
                self.launch_config, [*fixed, f"+search={choice}"]
            )
        except (MissingConfigException, ConfigCompositionException):
            return {}
        return dict(OmegaConf.to_container(found.hydra.sweeper.params or {}))

    def open(self, plan: Plan) -> optuna.Study:
        """The stored study (checked to be this one) or a new one; nothing written on refusal.

        Under the study's asking lock: a second launch at the same moment finds the study with
        its record, never half made."""
        storage = plan.backend = stored.open_storage(plan.storage)
        plan.launches.mkdir(parents=True, exist_ok=True)
        with hold_lock(plan.launches / "ask.lock", "opening"):
            study = stored.load(storage, self.study_name)
            if study is None:
                study = optuna.create_study(
                    study_name=self.study_name, storage=storage, direction=self.direction
                )
                study.set_user_attr("drsom", plan.record)
        stored.check_same(study.user_attrs.get("drsom") or {}, plan.record, self.study_name)
        finished = sum(t.state in stored.FINISHED_STATES for t in study.get_trials())
        if self.n_trials < finished:
            raise TuningError(
                f"hydra.sweeper.n_trials={self.n_trials}: the stored study {self.study_name} has "
                f"{finished} finished trials already (accepted: n_trials >= {finished}; a new "
                "study needs another hydra.sweeper.study_name)"
            )
        if study.user_attrs.get("budget") != self.n_trials:  # a relaunch may raise it
            study.set_user_attr("budget", self.n_trials)
        log.info(f"study {self.study_name}: stored in {plan.storage}")
        return study

    def check_failures(self, name: str, trials: list[FrozenTrial]) -> None:
        failed = [t for t in trials if t.state == TrialState.FAIL]
        allowed = allowed_failures(self.max_failure_rate, self.n_trials)
        if len(failed) > allowed:
            runs = ", ".join(str(t.user_attrs.get("run_id", f"trial {t.number}")) for t in failed)
            sys.exit(
                f"error: study {name}: {len(failed)} failed trials, more than "
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate} of the budget of "
                f"{self.n_trials} allows ({allowed}); failed runs: {runs}. Fix the cause and "
                f"relaunch with {relaunch_tolerating(len(failed), self.n_trials)}: the study "
                "continues"
            )

    # ------------------------------------------------------------------------------ trials
    def ask(self, study: optuna.Study, plan: Plan, launch: stored.Launch) -> tuple[int, list[str]]:
        """A new trial: drawn with the sampler seeded ``seed + number``, marked with its run."""
        from hydra.utils import instantiate

        number = len(study.get_trials(deepcopy=False))  # asking is serialised: the next number
        node = plan.sampler
        seed = node.get("seed") if isinstance(node, DictConfig) else None
        study.sampler = instantiate(node) if seed is None else instantiate(node, seed=seed + number)
        trial = study.ask()
        values = {key: suggest(trial, key, d) for key, d in plan.space.items()}
        overrides = [*plan.fixed, *(f"{k}={override_value(v)}" for k, v in values.items())]
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("launch", launch.id)
        trial.set_user_attr("run_id", self.run_id(overrides))
        return trial.number, overrides

    def run_id(self, overrides: list[str]) -> str:
        from drsom.store.identity import complete, run_id

        job = self.hydra_context.config_loader.load_sweep_config(self.launch_config, overrides)
        return run_id(complete(_run_config(job)))

    def job_overrides(self, plan: Plan, name: str, number: int, overrides: list[str]) -> list[str]:
        where = json.dumps({"storage": plan.storage, "study": name, "number": number})
        return [*overrides, f"hydra.job.env_set.{stored.TRIAL_VARIABLE}='{where}'"]

    def tell(
        self, study: optuna.Study, plan: Plan, number: int, ret: JobReturn, adopted: bool
    ) -> None:
        storage = plan.backend
        tid = stored.trial_id(storage, study.study_name, number)
        running = storage.get_trial(tid).state == TrialState.RUNNING

        def note(key: str, value: Any) -> None:  # only a running trial takes attributes
            if running:
                storage.set_trial_user_attr(tid, key, value)

        if ret.status != JobStatus.COMPLETED:
            reason = " ".join(str(ret._return_value).split())[:300] or "failed"
            note("error", reason)
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            log.warning(f"trial {number} failed: {reason}")
            return
        result = ret.return_value
        status = result.get("status")
        for key in ("status", "epochs"):
            note(key, result.get(key))
        if status in ("finished", "diverged"):
            study.tell(number, result["score"], skip_if_finished=True)
        elif status == "pruned":
            study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
        elif status == "busy" and adopted:
            pass  # its run is being trained by the job that another launch started: theirs
        else:
            note("error", f"run {result.get('run_id')}: {status}")
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            log.warning(f"trial {number} failed: run {result.get('run_id')} {status}")

    def report(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        count = stored.tally(trials)
        epochs = sum(int(t.user_attrs.get("epochs") or 0) for t in trials)
        line = (
            f"study {study.study_name}: {count[TrialState.COMPLETE]} complete, "
            f"{count[TrialState.PRUNED]} pruned, {count[TrialState.FAIL]} failed, "
            f"{count[TrialState.RUNNING]} running (budget {self.n_trials}); {epochs} epochs trained"
        )
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete:
            best = study.best_trial
            run = best.user_attrs.get("run_id")
            line += f"; best: {best.value:.4f} (trial {best.number}, run {run})"
        log.info(line)


# ---------------------------------------------------------------------------------- helpers
def allowed_failures(rate: float, n_trials: int) -> int:
    """The failed trials a study goes on with: ``rate`` of the budget, rounded up (any positive
    rate tolerates a failure, a lost node, in a small study)."""
    return math.ceil(rate * n_trials - 1e-9)


def relaunch_tolerating(failed: int, n_trials: int) -> str:
    """The overrides of a relaunch that goes on after ``failed`` failed trials, every value one the
    checks accept: the failed share of the budget in hundredths (raised until it tolerates them);
    when even a rate of 1 (the largest accepted) does not, i.e. more trials failed than the budget
    holds, a rate of 1 and a budget of ``failed`` trials."""
    hundredths = math.floor(100 * failed / n_trials)
    while hundredths <= 100 and allowed_failures(hundredths / 100, n_trials) < failed:
        hundredths += 1
    if hundredths <= 100:
        return f"hydra.sweeper.max_failure_rate={hundredths / 100:g}"
    return (
        f"hydra.sweeper.max_failure_rate=1 hydra.sweeper.n_trials={failed} (no rate in [0, 1] "
        f"tolerates {failed} failures in a budget of {n_trials})"
    )


def _run_config(job: DictConfig) -> dict[str, Any]:
    """A composed job config as the run sees it: resolved, without the hydra node (whose own
    keys resolve only inside a job)."""
    run_keys = [k for k in job if k != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(job, run_keys), resolve=True)


def distribution(p: Override) -> BaseDistribution:
    """The optuna distribution of a sweep override: interval (tag log, int), range, choice."""
    value = p.value()
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if "int" in value.tags:
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    values = list(p.sweep_iterator())
    if isinstance(value, RangeSweep):
        step = value.step
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(step))
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(step))
    assert isinstance(value, ChoiceSweep)
    return CategoricalDistribution(values)


def suggest(trial: optuna.Trial, key: str, d: BaseDistribution) -> Any:
    if isinstance(d, FloatDistribution):
        return trial.suggest_float(key, d.low, d.high, step=d.step, log=d.log)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_categorical(key, d.choices)


def override_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back exactly."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if re.fullmatch(r"[\w./-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_writable(path: Path) -> None:
    """The storage file's folder can be made and written (a trial never finds out too late)."""
    folder = path.parent
    above = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    if not above.is_dir():
        raise TuningError(
            f"hydra.sweeper.storage={path}: cannot write there ({above} is a file); accepted: a "
            "writable file path, or an optuna database URL (sqlite:///..., postgresql://...)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try_write(folder)
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied", str(path))
    except OSError as exc:
        raise TuningError(
            f"hydra.sweeper.storage={path}: cannot write there ({exc.strerror or exc}); accepted: "
            "a writable file path, or an optuna database URL (sqlite:///..., postgresql://...)"
        ) from None
