"""The tuning sweeper: hydra-optuna-sweeper's, after drsom.tuning's checks (its module doc).

Separate from drsom.tuning so that a job (which only scores itself) never imports optuna.
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import HydraContext, TaskFunction

# optuna imports alembic, whose plugins log a line each at INFO (Hydra's level) on import
logging.getLogger("alembic").setLevel(logging.WARNING)

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from drsom.tuning import (  # noqa: E402
    OBJECTIVES,
    TuningError,
    check_budget,
    check_search_space,
    check_validation_split,
)


class TuningSweeper(OptunaSweeper):
    """hydra-optuna-sweeper's sweeper, after the checks of the module doc."""

    def __init__(
        self, *args: Any, objective: str = "final", max_failure_rate: float = 0.0, **kwargs: Any
    ) -> None:
        # hydra-optuna-sweeper 1.3 takes max_failure_rate (failed trials tolerated per batch);
        # 1.2 has no such argument and stops at the first failed trial, which 0.0 means in 1.3
        if "max_failure_rate" in inspect.signature(OptunaSweeper.__init__).parameters:
            kwargs["max_failure_rate"] = max_failure_rate
        super().__init__(*args, **kwargs)
        self.objective = objective

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context, self.launch_config = hydra_context, config
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        try:
            self.check(arguments)
        except ValueError as exc:  # TuningError, and the run's own config errors
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        return super().sweep(arguments)

    def check(self, arguments: list[str]) -> None:
        if self.objective not in OBJECTIVES:
            raise TuningError(
                f"hydra.sweeper.objective={self.objective!r}: accepted: {', '.join(OBJECTIVES)}"
            )
        check_budget(self.sweeper.n_trials)
        parser, loader = OverridesParser.create(), self.hydra_context.config_loader
        fixed = [
            p.input_line for p in parser.parse_overrides(arguments) if not p.is_sweep_override()
        ]
        job = loader.load_sweep_config(self.launch_config, fixed)
        space = {**self._search_file(job, fixed), **(self.launch_config.hydra.sweeper.params or {})}
        self.sweeper.params = space  # what the optuna sweeper samples from
        params = parser.parse_overrides([f"{k}={v}" for k, v in space.items()] + list(arguments))
        check_search_space(params, job)
        check_validation_split(job)
        from drsom.config import ConfigError, validate
        from drsom.identity import complete

        run_keys = [k for k in job if k != "hydra"]  # hydra's own keys resolve only in a job
        plain = OmegaConf.to_container(OmegaConf.masked_copy(job, run_keys), resolve=True)
        try:
            validate(complete(plain))
        except ConfigError as exc:
            raise TuningError(str(exc)) from None

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
