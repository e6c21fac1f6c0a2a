"""The runs of a sweep and where each one stands, read from the results store.

``sweep_runs("fig1", ["seed=0,1"])`` expands a grid the way ``python run.py -m experiment=fig1
seed=0,1`` does (Hydra's basic sweeper: the experiment's ``hydra.sweeper.params`` first, then the
command line, a key given again taking the later value; the cartesian product of the values),
composes each point's config and derives its run id with the store's ``run_id``, so it finds the
folder the job writes to. Nothing is trained and nothing is written.

``run_states`` reads each folder's state with ``drsom.store.state.run_state``, the one reader every
tool shares ("running" without a live lock holder is "interrupted"; inconsistent files "broken").
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from drsom import CONFIG_DIR
from drsom.store.folder import RunDir
from drsom.store.state import Status, run_state


@dataclass(frozen=True)
class SweepRun:
    overrides: tuple[str, ...]  # the job's overrides, as the launcher passes them
    run_id: str
    run_dir: RunDir
    config: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # resolved


@dataclass(frozen=True)
class SweepRunState:
    run: SweepRun
    status: Status
    summary: dict[str, Any]
    problem: str | None = None


def sweep_runs(
    experiment: str | None,
    overrides: Sequence[str] = (),
    *,
    config_dir: Path = CONFIG_DIR,
    base_dir: Path | None = None,
) -> list[SweepRun]:
    """Every run of the sweep ``experiment=<experiment> <overrides>``, in launch order.

    ``overrides`` are command-line overrides, sweeps included (``seed=0,1,2``,
    ``optimizer=drsom,adam``); ``hydra.*`` ones (``hydra.searchpath=[...]``) are passed to every
    composition and are not part of the grid. A relative ``results_dir`` is taken from
    ``base_dir`` (default: the current directory), which must be the launch's own: ``run.py``
    in a checkout uses the repository root, ``drsom-run`` the current directory.
    """
    base_dir = Path.cwd() if base_dir is None else base_dir
    arguments = ([f"experiment={experiment}"] if experiment else []) + list(overrides)
    hydra_args = [a for a in arguments if is_hydra(a)]
    task_args = [a for a in arguments if not is_hydra(a)]
    GlobalHydra.instance().clear()  # compose needs its own context, whatever ran before
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        fixed = [
            o.input_line for o in parser.parse_overrides(task_args) if not o.is_sweep_override()
        ]
        base = compose("config", overrides=[*fixed, *hydra_args], return_hydra_config=True)
        params = base.hydra.sweeper.params or {}
        grid = _grid(parser, [f"{k}={v}" for k, v in params.items()] + task_args)
        runs = []
        for point in grid:
            cfg = compose("config", overrides=[*point, *hydra_args])
            c = OmegaConf.to_container(cfg, resolve=True)
            folder = RunDir.of(c, base_dir)
            runs.append(SweepRun(tuple(point), folder.name, folder, c))
    GlobalHydra.instance().clear()
    return runs


def is_hydra(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def _grid(parser: OverridesParser, lines: Sequence[str]) -> list[list[str]]:
    """Hydra's basic sweeper: one list of ``key=value`` per key (a later one replaces an earlier
    one, in its place), then every combination."""
    choices: dict[str, list[str]] = {}
    for override in parser.parse_overrides(list(lines)):
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ValueError(f"{override.input_line}: only lists and ranges can be swept")
            choices[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(point) for point in itertools.product(*choices.values())]


def run_states(runs: Sequence[SweepRun]) -> list[SweepRunState]:
    states = []
    for run in runs:
        state = run_state(run.run_dir)
        states.append(SweepRunState(run, state.status, state.summary, state.problem))
    return states


def varying_keys(runs: Sequence[SweepRun]) -> list[str]:
    """The keys whose value differs between the runs: what tells them apart in a listing."""
    values: dict[str, set[str]] = {}
    for run in runs:
        for line in run.overrides:
            key, _, value = line.partition("=")
            values.setdefault(key, set()).add(value)
    return [k for k, v in values.items() if len(v) > 1]


def counts(states: Sequence[SweepRunState]) -> dict[str, int]:
    return {s.value: sum(1 for st in states if st.status == s) for s in Status}
