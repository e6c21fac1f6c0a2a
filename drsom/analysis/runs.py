"""The results store read back for figures and tables: experiment grids, runs, pandas frames.

An experiment (``experiments/<name>.yaml``) names its grid in ``hydra.sweeper.params``;
``experiment_runs`` expands it exactly as ``python run.py -m experiment=<name>`` does (Hydra's
basic sweeper, command-line overrides winning over the file's) and names each job's run with the
store's own ``run_id`` (through ``drsom.store.sweeps``), so a figure, a table and a sweep-status
report all agree on which runs belong to an experiment. An experiment may show runs of another
beside its own (``study.reuse``: the headline study's Adam beside a study of DRSOM's variants):
they keep their own run ids, are never launched again, and must have been made on the same
protocol (every identity key but the experiment's name and the optimizer), which is checked.
``select_runs`` then finds those runs in a
results folder and says which are missing; ``metrics_frame`` turns them into one long pandas
table.

Accuracies stay fractions in [0, 1], as in the store; only the figures show percent.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from drsom.cfg.experiments import EXPERIMENT_DIR, experiment_names, is_tuning, study_of
from drsom.store.folder import RunDir
from drsom.store.identity import RunKey, complete, group_name, identity
from drsom.store.state import Status, run_state
from drsom.store.sweeps import is_hydra, sweep_runs

log = logging.getLogger("drsom")

# A run's state comes from drsom.store.state, the one reader of it; "missing": the grid has the
# run, the store does not.
FINISHED, DIVERGED, MISSING = Status.FINISHED, Status.DIVERGED, Status.MISSING

# The raw count axis ``grads_hvps``: gradients plus Hessian-vector products, forwards not counted
# (what a cost figure showed before gradient equivalents, drsom.analysis.costs, which weigh all
# three oracles by their measured times).
COST_COLUMNS = ("grad", "hvp")


# ----------------------------------------------------------------------------- experiments
def experiment_runs(name: str, overrides: Sequence[str] = ()) -> list[tuple[list[str], str]]:
    """``(job overrides, run id)`` of every run ``python run.py -m experiment=<name> *overrides``
    launches, in launch order (the grid expansion is ``drsom.store.sweeps.sweep_runs``, which the
    sweep-status tool uses too: one rule for every reader of the store)."""
    if name not in experiment_names():
        raise ValueError(
            f"no experiment {name!r} in {EXPERIMENT_DIR} (have: {', '.join(experiment_names())})"
        )
    own = sweep_runs(name, overrides)
    runs = [(list(r.overrides), r.run_id) for r in own]
    reuse = study_of(name).get("reuse") or {}
    if reuse:
        seeds = ",".join(str(s) for s in dict.fromkeys(r.config["seed"] for r in own))
        hydra_args = [o for o in overrides if is_hydra(o)]
        protocols = [_protocol(r.config) for r in own]
    for other, choices in reuse.items():
        grid = [f"optimizer={','.join(choices)}", f"seed={seeds}", *hydra_args]
        for r in sweep_runs(other, grid):
            if _protocol(r.config) not in protocols:
                raise ValueError(
                    f"experiment {name} reuses run {r.run_id} of {other}, made on another "
                    f"protocol: {_first_difference(protocols[0], _protocol(r.config))}"
                )
            runs.append((list(r.overrides), r.run_id))
    return runs


def _protocol(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run's identity without its experiment's name and its optimizer: what two studies must
    share for one to show the other's runs."""
    ident = identity(config)
    for key in ("experiment", "optimizer"):
        ident.pop(key, None)
    return ident


def _first_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    flat_a, flat_b = _flatten(a), _flatten(b)
    for key in sorted(set(flat_a) | set(flat_b)):
        if flat_a.get(key) != flat_b.get(key):
            return f"{key} is {flat_a.get(key)!r} here, {flat_b.get(key)!r} there"
    return "none"


# ----------------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One run folder read back, with its state (``drsom.store.state``) and, when it is
    ``broken``, why (``problem``)."""

    run_id: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    state: Status | None = None  # None: made by hand, the summary's status is taken
    problem: str | None = None
    # the data fingerprint, set by ``load_store`` where runs of one config read different data
    data_split: str | None = None

    @property
    def status(self) -> Status:
        if self.state is not None:
            return self.state
        return Status(self.summary.get("status", MISSING))

    def key(self) -> tuple[str, str, str, str, int]:
        """(experiment, data, model, optimizer label, seed): a run's place in a figure."""
        c = self.config
        return (c["experiment"], c["data"]["name"], c["model"]["name"], label(c), c["seed"])

    @property
    def group(self) -> str:
        """The run's config without its seed (the store's group name), as its folder's name
        says: a broken run whose config.yaml was edited still belongs where its id put it (its
        config would make it a variant of its own). Runs made by hand, without a run id of the
        store's form: from the config."""
        try:
            return RunKey.parse(self.run_id).variant
        except ValueError:
            return group_name(self.config)

    @property
    def variant(self) -> str:
        """The run's group, and the data it read when runs of that config read different data
        (``<group>@<fingerprint>``): runs of one variant are replicates, and only they are ever
        averaged."""
        return f"{self.group}@{self.data_split}" if self.data_split else self.group


def label(cfg: dict[str, Any]) -> str:
    return complete(cfg)["optimizer"]["label"]


def variant_suffixes(runs: Iterable[Run]) -> dict[str, str]:
    """Per variant: the settings that tell it apart from the other variants of its optimizer
    label on the same data and model (``lr=0.01``; ``""`` for a label with one variant).

    Optimizer keys are named without their ``optimizer.`` prefix, every other key in full
    (``trainer.epochs=8``), so "Adam lr=0.01" and "Adam lr=0.001" are two lines, never a mean.
    """
    flat: dict[str, dict[str, Any]] = {}
    family: dict[tuple, list[str]] = {}
    # a variant's settings from a readable run: a broken one's config may have been edited
    for r in sorted(runs, key=lambda r: r.problem is not None):
        if r.variant in flat:
            continue
        flat[r.variant] = _flatten(identity(r.config))
        if r.data_split:
            flat[r.variant]["data.read"] = r.data_split
        c = r.config
        family.setdefault((c["data"]["name"], c["model"]["name"], label(c)), []).append(r.variant)
    out = {}
    for variants in family.values():
        keys = sorted({k for v in variants for k in flat[v]})
        differ = [k for k in keys if len({repr(flat[v].get(k)) for v in variants}) > 1]
        for v in variants:
            out[v] = " ".join(
                f"{k.removeprefix('optimizer.')}={_short(flat[v].get(k))}" for k in differ
            )
    return out


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out |= _flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_short(v) for v in value) + "]"
    return "-" if value is None else str(value)


def load_run(path: str | Path) -> Run | None:
    """The run in ``path``; None when it holds no config (not a run folder, or never started).

    Its state, and whether its files can be used, is ``drsom.store.state``'s to say (the one
    checked reader of a run folder): a ``broken`` run is returned with its ``problem`` and no
    metrics, so that it is counted and reported, never averaged. The metrics are the rows that
    reader checked, never a second parse of the file.
    """
    folder = RunDir(path)
    state = run_state(folder)
    if not state.config:
        return None
    config = complete(state.config)
    problem = _config_problem(config) or state.problem
    metrics = pd.DataFrame() if problem else _frame(state.columns, state.metrics)
    status = Status.BROKEN if problem else state.status
    return Run(folder.name, folder.path, config, state.summary, metrics, status, problem)


def _frame(columns: list[str], rows: list[dict[str, float]]) -> pd.DataFrame:
    """The checked rows as a frame; columns of whole numbers (epoch, step, the oracle counts) as
    integers, as ``pd.read_csv`` would have typed them."""
    frame = pd.DataFrame(rows, columns=columns)
    for column in columns:
        values = frame[column]
        if len(values) and values.notna().all() and (values % 1 == 0).all():
            frame[column] = values.astype("int64")
    return frame


def _config_problem(config: dict[str, Any]) -> str | None:
    try:
        RunKey.of(config)
        config["experiment"], config["trainer"]["epochs"]  # noqa: B018 (read to check)
    except (KeyError, TypeError, AttributeError) as exc:
        return f"config.yaml is of another format (no {exc})"
    return None


def load_store(
    results_dir: str | Path, *, report=print, left_out: list[str] | None = None
) -> list[Run]:
    """Every run folder under ``results_dir`` (sorted by name). Each broken run is reported on one
    line (``report``); it is kept, to be counted as unfinished, unless its config cannot even
    say where it belongs (absent, or of an older format), in which case it is left out (and
    named in ``left_out``, when given: it may belong to any selection)."""
    root = Path(results_dir)
    if not root.is_dir():
        return []
    left_out = [] if left_out is None else left_out
    kept = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        r = load_run(path)
        if r is None:
            if RunDir(path).summary.exists():  # a run's record without the config that made it
                report(f"broken run {path}: config.yaml is missing or unreadable; left out")
                left_out.append(f"{path.name} (config.yaml is missing or unreadable)")
            continue
        placed = _config_problem(r.config) is None
        if r.problem:
            what = "counted as unfinished" if placed else "left out"
            report(f"broken run {path}: {r.problem}; {what}")
        if placed:
            kept.append(r)
        else:
            left_out.append(f"{r.run_id} ({r.problem})")
    return _split_by_data(kept, report, left_out)


def _split_by_data(runs: list[Run], report, left_out: list[str]) -> list[Run]:
    """Runs of one config that read different data (``data_fingerprint``) are different
    variants: each gets its fingerprint as part of its variant, and it is said once.

    Only readable runs say what data a config read: a broken run (whose summary may be gone)
    never splits a variant. It joins the variant of the data its summary names; in a config
    split by data whose broken run does not say which (no summary), it cannot be placed and
    is left out, said on one line."""
    seen: dict[str, set[str]] = {}
    for r in runs:
        prints = seen.setdefault(r.group, set())
        if r.problem is None:
            prints.add(str(r.summary.get("data_fingerprint")))
    kept = []
    for r in runs:
        prints = seen[r.group]
        if len(prints) > 1:
            read = str(r.summary.get("data_fingerprint"))
            if read not in prints:
                report(f"broken run {r.path}: its config ran on several data; left out")
                left_out.append(f"{r.run_id} ({r.problem}; of a config run on several data)")
                continue
            r.data_split = read
        kept.append(r)
    for group, prints in seen.items():
        if len(prints) > 1:
            report(f"{group}: runs of one config on different data ({', '.join(sorted(prints))})")
    return kept


def readable(store: list[Run]) -> list[Run]:
    """The runs whose results can be used (not broken)."""
    return [r for r in store if r.problem is None]


def broken_in(selections: Iterable[Selection], left_out: Sequence[str] = ()) -> list[str]:
    """``<run id> (<why>)`` of every broken run of ``selections``, and of the runs the store left
    out because they cannot be placed (``load_store``'s ``left_out``: they may be of any)."""
    found = [f"{r.run_id} ({r.problem})" for s in selections for r in s.runs if r.problem]
    return list(dict.fromkeys([*found, *left_out]))


BROKEN_ADVICE = (
    "repair or remove them (a rerun of the same command resumes a broken run from its "
    "checkpoint), or rerun with --allow-broken to leave them out, named in the tables and captions"
)


def refusal(broken: Sequence[str]) -> str:
    """The one line a publishing tool stops with when runs of its selection are broken."""
    return f"error: {len(broken)} broken run(s) in the selection ({_ids(broken)}): {BROKEN_ADVICE}"


def left_out_note(runs: Sequence[Run]) -> str:
    """What a table or a caption says about the broken runs it leaves out ("" when none)."""
    broken = [r for r in runs if r.problem]
    if not broken:
        return ""
    each = "; ".join(f"{r.run_id}: {r.problem}" for r in broken)
    return f"Left out, broken ({len(broken)}): {each}"


def _ids(broken: Sequence[str]) -> str:
    ids = [b.split(" (", 1)[0] for b in broken]
    return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def first_readable(runs: Sequence[Run]) -> Run:
    """The run a heading describes the protocol from: a readable one (a broken run's summary may
    be gone, and with it the image count and the machine), else the first."""
    return next((r for r in runs if r.problem is None), runs[0])


@dataclass
class Selection:
    """The runs of one experiment found in a store, and the grid's runs it lacks."""

    experiment: str
    runs: list[Run]
    missing: list[tuple[list[str], str]]  # (job overrides, expected run id)
    substituted: dict[str, str]  # expected run id -> the stored run used instead


def select_runs(
    results_dir: str | Path,
    name: str,
    overrides: Sequence[str] = (),
    store: list[Run] | None = None,
) -> Selection:
    """The runs of experiment ``name`` in ``results_dir``, by the grid's run ids.

    A grid point whose exact run id is absent falls back to a stored run of the same experiment,
    data, model, optimizer label and seed (a run made before a config key was added or changed):
    it is used, with a warning, rather than silently leaving a hole in the figure.
    """
    store = load_store(results_dir) if store is None else store
    by_id = {r.run_id: r for r in store}
    by_key: dict[tuple, list[Run]] = {}
    for r in store:
        with contextlib.suppress(KeyError, TypeError):
            by_key.setdefault(r.key(), []).append(r)
    runs, missing, substituted = [], [], {}
    for job, rid in experiment_runs(name, overrides):
        if rid in by_id:
            runs.append(by_id[rid])
            continue
        k = RunKey.parse(rid)
        candidates = by_key.get((name, k.data, k.model, k.label, k.seed), [])
        if not candidates:
            missing.append((job, rid))
            continue
        # the most complete candidate: finished before anything else, then the most epochs
        found = max(candidates, key=lambda r: (r.status == FINISHED, len(r.metrics)))
        log.warning(
            f"{name}: run {rid} not in the store; using {found.run_id} (same data, model, "
            "optimizer and seed, made with another version of the config)"
        )
        runs.append(found)
        substituted[rid] = found.run_id
    return Selection(name, runs, missing, substituted)


def experiment_selection(results_dir: str | Path, name: str, store: list[Run]) -> Selection:
    """``select_runs`` for an experiment file, with the tuned optimizer configs of
    ``drsom-select`` (``<results_dir>/../selected``) on Hydra's search path. For a tuning
    experiment (its trials are drawn, not a grid: ``drsom.launch.tuning``) and for a name without a
    file (runs exported from wandb under another study name), every stored run whose config
    names that experiment."""
    if name in experiment_names() and not is_tuning(name):
        selected = Path(results_dir).parent / "selected"
        search = [f"hydra.searchpath=[file://{selected.resolve()}]"] if selected.is_dir() else []
        return select_runs(results_dir, name, search, store=store)
    return Selection(name, [r for r in store if r.config.get("experiment") == name], [], {})


def stored_experiments(store: list[Run]) -> list[str]:
    """Every experiment with runs in the store: those with a file first (name order), then the
    others (``default``: runs made without an experiment file; names of exported studies)."""
    present = {str(r.config.get("experiment")) for r in store}
    files = [e for e in experiment_names() if e in present]
    return files + sorted(present - set(files))


def found_line(store: list[Run]) -> str:
    """What a store holds, for a selection that came out empty: which experiments, how many runs
    each, and how to select one."""
    counts: dict[str, int] = {}
    for r in store:
        counts[str(r.config.get("experiment"))] = counts.get(str(r.config.get("experiment")), 0) + 1
    have = ", ".join(f"{e} ({n} run{'s' if n != 1 else ''})" for e, n in sorted(counts.items()))
    return f"the store holds {have or 'no runs'}; select one with --experiment NAME"


# --------------------------------------------------------------------------------- frames
RUN_COLUMNS = ("run_id", "experiment", "data", "model", "optimizer", "seed", "status")
VARIANT_COLUMNS = ("variant", "setting")  # the group name, and what sets it apart (or "")


def metrics_frame(runs: Iterable[Run], weights: dict | None = None) -> pd.DataFrame:
    """Every run's metrics.csv rows, with the run's identity columns, ``grads_hvps`` (gradients
    + HVPs) and, given ``weights`` (model -> ``costs.Weights``, every model of the runs),
    ``grad_equiv`` (``costs.add_grad_equiv``).

    ``optimizer`` is the config's label (colour, display name, published curves); ``variant``
    is what lines and cells are grouped by, and ``setting`` what the legend adds to the label.
    """
    runs = list(runs)
    suffix = variant_suffixes(runs)
    frames = []
    for r in runs:
        if not len(r.metrics):
            continue
        m = r.metrics.copy()
        for column, value in zip(RUN_COLUMNS, (r.run_id, *r.key(), r.status), strict=True):
            m[column] = value
        m["variant"], m["setting"] = r.variant, suffix[r.variant]
        frames.append(m)
    if not frames:
        extra = ["grad_equiv"] if weights is not None else []
        return pd.DataFrame(columns=[*RUN_COLUMNS, *VARIANT_COLUMNS, "epoch", "grads_hvps", *extra])
    out = pd.concat(frames, ignore_index=True)
    out["grads_hvps"] = sum(out[c].fillna(0) for c in COST_COLUMNS if c in out)
    if weights is not None:
        from drsom.analysis.costs import add_grad_equiv

        out = add_grad_equiv(out, weights)
    return out


# ------------------------------------------------------------------------------ reference
REFERENCE_COLUMNS = ("model", "optimizer", "epoch", "train_acc", "test_acc")


def load_reference(path: str | Path) -> pd.DataFrame:
    """Published curves in the long format (accuracies in percent) with accuracies as fractions.

    The store keeps fractions in [0, 1]; converting here keeps one unit everywhere downstream.
    """
    ref = pd.read_csv(path)
    absent = [c for c in REFERENCE_COLUMNS if c not in ref.columns]
    if absent:
        raise ValueError(f"{path}: no column(s) {', '.join(absent)} (need {REFERENCE_COLUMNS})")
    ref = ref.copy()
    for column in ("train_acc", "test_acc"):
        ref[column] = ref[column] / 100.0
    return ref
