"""Each optimizer's best trial of a tuning experiment, written as an optimizer config (the work
of ``drsom select``, ``drsom.tools.select``):

    drsom select --experiment tune_digits_cnn   # (scripts/select_tuned.py in a checkout)
    python run.py -m experiment=digits_tuned_cnn 'hydra.searchpath=[file://results/selected]'

The trials are the stored runs of the experiment (one study per optimizer label and per dataset
and model). Each finished trial is scored as the sweeper scored it
(``drsom.store.state.objective``): the validation accuracy at the final epoch (``--by final``, the
default), or at the epoch validation selects (``--by best``); a diverged trial scores 0; unfinished
ones are counted, not ranked. The highest score wins; among equal scores (a small validation split
saturates) the lower final validation loss, then the first run id. The test set is never looked at.

Written under ``<out>`` (default ``results/selected``, beside the store):

* ``optimizer/<experiment>/<label>.yaml``: the optimizer's own config (``optimizer/<label>.yaml``
  through Hydra's defaults list: its interpolations, e.g. DRSOM's ``seed: ${seed}``, stay) with
  the selected values of the searched keys. With ``<out>`` on Hydra's search path a final
  experiment names it ``optimizer=<experiment>/<label>``; the analysis tools put
  ``<store>/../selected`` on it themselves;
* ``<experiment>.selection.md`` / ``.csv``: per optimizer the budget and search space the trials
  ran under (the stored study's; for trials without one, the range their configs show), how many
  trials finished, the selected values, their score and run id.

All or nothing: a broken trial (``drsom.store.state``) stops the selection unless
``--allow-broken`` (then it is left out and counted), an optimizer none of whose trials finished
stops it, and the configs and reports of an experiment are replaced together
(``write_selection``), so the final stage never runs an earlier selection's config beside a new
report.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from optuna.distributions import json_to_distribution

from drsom.analysis.runs import Run
from drsom.store.identity import identity
from drsom.store.state import Status, objective
from drsom.store.study import STUDIES, flatten

BY = ("final", "best")


def write_selection(out: Path, experiment: str, configs: dict, table: pd.DataFrame, text: str):
    """The whole selection of ``experiment``: ``optimizer/<experiment>/`` (only this selection's
    configs: an earlier one's are gone) and ``<experiment>.selection.md/.csv``, written into a
    temporary folder beside them and moved into place only when all of it is written, so a
    refused or failed selection leaves the previous one whole (never a new report beside stale
    configs). The configs are renamed first: they are what the final stage reads. Renames on one
    filesystem do not fail for want of space; a process killed between them (microseconds) could
    leave the reports one selection behind, which their run ids show."""
    folder = out / "optimizer" / experiment
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{experiment}.selection-", dir=out))
    try:
        new = staged / "configs"
        new.mkdir()
        for name, yaml_text in configs.items():
            (new / f"{name}.yaml").write_text(yaml_text)
        table.to_csv(staged / "selection.csv", index=False)
        (staged / "selection.md").write_text(text)
        old = staged / "previous"
        if folder.exists():
            folder.replace(old)
        new.replace(folder)
        (staged / "selection.csv").replace(out / f"{experiment}.selection.csv")
        (staged / "selection.md").replace(out / f"{experiment}.selection.md")
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return folder


def select(
    store: list[Run],
    experiment: str,
    by: str = "final",
    studies_dir: Path | None = None,
    allow_broken: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """(the selection table, {config name: YAML text}) for the trials of ``experiment``.

    Each optimizer's stored study (``studies_dir``; default: ``studies`` beside the trials'
    store) is checked against its runs and gives the budget and search space it ran under;
    without one, the space is what the trials' configs show (``ran_under``). Raises ValueError
    (one line) when a trial is broken (unless ``allow_broken``: then it is left out and counted),
    when an optimizer has no finished trial (all or nothing: no selection without it), or when a
    stored study disagrees with its runs."""
    trials = [r for r in store if r.config.get("experiment") == experiment]
    if not any(r.status == Status.FINISHED for r in trials):
        have = sorted({str(r.config.get("experiment")) for r in store if r.config})
        raise ValueError(
            f"experiment {experiment!r} has no finished trials in the store ({len(trials)} runs "
            f"of it; the store has runs of: {', '.join(have) or 'nothing'})"
        )
    broken = [r for r in trials if r.status == Status.BROKEN]
    if broken and not allow_broken:
        raise ValueError(
            f"{len(broken)} of the {len(trials)} trials of {experiment} are broken ("
            f"{', '.join(r.run_id for r in broken)}; why: above): repair or remove them, or "
            "--allow-broken to select from the others"
        )
    if studies_dir is None:
        studies_dir = trials[0].path.parent.parent / STUDIES
    studies: dict[tuple, list[Run]] = {}
    for r in trials:
        c = r.config
        studies.setdefault((c["data"]["name"], c["model"]["name"], r.key()[3]), []).append(r)
    rows, configs = [], {}
    for (data, model, label), runs in studies.items():
        readable = [r for r in runs if r.status != Status.BROKEN]
        scored = [(objective(r.summary, by), r.run_id, r) for r in readable]
        ranked = sorted((s for s in scored if not math.isnan(s[0])), key=_rank)
        if not ranked or ranked[0][2].status != Status.FINISHED:
            states = ", ".join(f"{n} {s}" for s, n in _tally(runs).items())
            raise ValueError(
                f"no trial of {label} on {data}/{model} finished ({states}): a selection without "
                f"it would be incomplete; finish its study (relaunch it) and select again"
            )
        ran = ran_under(store, studies_dir, experiment, label, readable, by)
        row = {"data": data, "model": model, "optimizer": label}
        row |= {"display": runs[0].config["optimizer"].get("display") or label}
        row |= {"budget": ran["budget"], "search_space": ran["shown"], "space_from": ran["from"]}
        row |= {"trials": len(runs), "finished": sum(r.status == Status.FINISHED for r in runs)}
        row |= {"diverged": sum(r.status == Status.DIVERGED for r in runs)}
        row |= {"broken": len(runs) - len(readable)}
        score, rid, best = ranked[0]
        values = {k: _lookup(best.config, k) for k in ran["keys"]}
        row |= {"selected": _space(values), "score": score, "run_id": rid}
        row |= {"test_acc_of_selected": (best.summary.get("final") or {}).get("test_acc")}
        rows.append(row)
        configs[label] = tuned_config(label, values, row, experiment, by)
    return pd.DataFrame(rows), configs


def _tally(runs: list[Run]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in runs:
        out[str(r.status)] = out.get(str(r.status), 0) + 1
    return out


def ran_under(
    store: list[Run], studies_dir: Path, experiment: str, label: str, trials: list[Run], by: str
) -> dict[str, Any]:
    """The budget and search space ``label``'s trials ran under: the stored study's (checked
    against the runs, ``check_study``), which is what the launch drew from, whatever it
    overrode. Trials made before studies were stored have none: then the searched keys are
    those whose values differ between the trials, shown as the range they ran (not the space
    they were drawn from, which no file records), and the budget is unknown."""
    study = check_study(store, studies_dir, experiment, label, by)
    if study is not None:
        space = {k: json_to_distribution(v) for k, v in study["space"].items()}
        shown = "; ".join(f"{k}={_distribution(d)}" for k, d in space.items())
        return {"budget": study["budget"], "keys": list(space), "shown": shown, "from": "study"}
    values: dict[str, set] = {}
    for r in trials:
        for key, value in flatten(identity(r.config)).items():
            values.setdefault(key, set()).add(json.dumps(value, sort_keys=True))
    keys = [k for k, v in values.items() if len(v) > 1]
    if not keys:  # one trial, or all at one point: the experiment's own space names the keys
        keys = list(_settings(experiment, label)["space"])
    ranges = []
    for k in keys:
        seen = [_lookup(r.config, k) for r in trials]
        numbers = [v for v in seen if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) == len(seen):
            ranges.append(f"{k} ran {min(numbers):.4g}..{max(numbers):.4g}")
        else:
            ranges.append(f"{k} ran {', '.join(sorted({str(v) for v in seen}))}")
    shown = "; ".join(ranges) + f" ({len(trials)} trials; no stored study)"
    return {"budget": None, "keys": keys, "shown": shown, "from": "trials"}


def _distribution(d) -> str:
    """An optuna distribution as the search space says it: ``[0.0001, 0.03] log``, ``{a, b}``."""
    if hasattr(d, "choices"):
        return "{" + ", ".join(str(c) for c in d.choices) + "}"
    text = f"[{d.low:.4g}, {d.high:.4g}]"
    if getattr(d, "step", None):
        text += f" step {d.step:g}"
    return text + (" log" if getattr(d, "log", False) else "")


def check_study(
    store: list[Run], studies: Path, experiment: str, label: str, by: str
) -> dict[str, Any] | None:
    """The budget and search space (``{"budget": n, "space": {key: distribution JSON}}``) of the
    stored study of ``label`` (``<studies>/<experiment>-<label>.journal``, the sweeper's default
    name), after checking it against the runs: ValueError (one line naming the run) where they
    disagree; a broken run is not compared (it is named as broken). None where there is no
    stored study (trials made before studies were stored)."""
    from drsom.store import study as stored

    path = studies / f"{experiment}-{label}.journal"
    if not path.is_file():
        return None
    scores = {r.run_id: (str(r.status), _score(r.summary, by)) for r in store}
    broken = {r.run_id for r in store if r.status == Status.BROKEN}
    found = None
    for study in stored.load_studies(path):
        record = study.user_attrs.get("drsom") or {}
        scored_by = record.get("objective", by)
        if scored_by != by:
            raise ValueError(
                f"study {study.study_name} scored its trials by --by {scored_by}, this selection "
                f"by --by {by}"
            )
        if problem := stored.disagreement(study, scores, ignore=broken):
            raise ValueError(problem)
        found = {"budget": study.user_attrs.get("budget"), "space": record.get("space") or {}}
    return found


def _score(summary: dict, by: str) -> float | None:
    value = objective(summary, by)
    return None if math.isnan(value) else value


def _rank(scored: tuple[float, str, Run]) -> tuple:
    """Highest score first; among equal scores (a small validation split saturates: several
    trials at 100%) the lower final validation loss, then the run id."""
    score, rid, run = scored
    loss = (run.summary.get("final") or {}).get("val_loss")
    return (-score, math.inf if loss is None else loss, rid)


def _settings(experiment: str, label: str) -> dict[str, Any]:
    """The budget and the search space the tuning sweeper used for ``label``."""
    from drsom.cfg.compose import suite_config

    base = [f"experiment={experiment}", f"optimizer={label}"]
    try:
        cfg = suite_config([*base, f"+search={label}"], hydra=True, resolve=False)
    except Exception:  # no search file (a space given on the command line): budget only
        cfg = suite_config(base, hydra=True, resolve=False)
    sweeper = cfg["hydra"]["sweeper"]
    return {"budget": sweeper.get("n_trials"), "space": dict(sweeper.get("params") or {})}


def _lookup(cfg: dict, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _space(values: dict[str, Any]) -> str:
    return "; ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )


def tuned_config(label: str, values: dict[str, Any], row: dict, experiment: str, by: str) -> str:
    """The optimizer's own config (``optimizer/<label>.yaml``, by Hydra's defaults list, so every
    interpolation and default stays its own) with the selected values on top, as YAML."""
    header = [
        "# @package optimizer",
        f"# {label} as tuned by experiment {experiment} (drsom-select --by {by}): the best of "
        f"{row['finished']} finished trials",
        f"# (budget {row['budget'] or 'unknown'}; {row['diverged']} diverged"
        f"{_left_out(row.get('broken'))}) by validation accuracy at the "
        f"{'final' if by == 'final' else 'validation-selected'} epoch: {row['score']:.4f}, "
        f"run {row['run_id']}.",
        f"# Search space: {row['search_space']}",
    ]
    node = {"defaults": [f"/optimizer/{label}@_here_", "_self_"]}
    node |= {key.removeprefix("optimizer."): value for key, value in values.items()}
    return "\n".join(header) + "\n" + yaml.safe_dump(node, sort_keys=False)


def _left_out(broken: Any) -> str:
    return f", {int(broken)} broken and left out" if broken else ""


def selection_markdown(table: pd.DataFrame, experiment: str, by: str = "final") -> str:
    """The selection for a reader: per optimizer the budget, the space, and what won."""
    what = "final-epoch" if by == "final" else "validation-selected-epoch"
    lines = [
        f"## {experiment}: tuned settings",
        "",
        f"Each optimizer's trials ranked by {what} validation accuracy, ties by the final "
        "validation loss (the test set is never used to choose); a diverged trial scores 0.",
        "",
        "| data | model | optimizer | budget | finished (diverged) | search space | selected | "
        "val acc (%) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _, r in table.iterrows():
        score = "–" if pd.isna(r["score"]) else f"{100 * r['score']:.2f}"
        budget = "unknown" if pd.isna(r.get("budget")) else int(r["budget"])
        left_out = _left_out(r.get("broken"))
        lines.append(
            f"| {r['data']} | {r['model']} | {r['display']} | {budget} | "
            f"{r['finished']}/{r['trials']} ({r['diverged']}{left_out}) | {r['search_space']} | "
            f"{r['selected'] or 'none finished'} | {score} |"
        )
    return "\n".join(lines) + "\n"
