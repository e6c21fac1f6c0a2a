"""Pick each optimizer's best trial of a tuning experiment, and write it as an optimizer config.

    drsom-select --experiment tune_digits_cnn   # (scripts/select_tuned.py in a checkout)
    python run.py -m experiment=digits_tuned_cnn 'hydra.searchpath=[file://results/selected]'

The trials are the stored runs of the experiment (one study per optimizer label and per dataset
and model). Each finished trial is scored as the sweeper scored it (``drsom.tuning.objective``):
the validation accuracy at the final epoch (``--by final``, the default), or at the epoch
validation selects (``--by best``); a diverged trial scores 0; unfinished ones are counted, not
ranked. The highest score wins; among equal scores (a small validation split saturates) the lower
final validation loss, then the first run id. The test set is never looked at.

Written under ``<out>`` (default ``results/selected``, beside the store):

* ``optimizer/<experiment>/<label>.yaml``: the optimizer's own config (``optimizer/<label>.yaml``
  through Hydra's defaults list: its interpolations, e.g. DRSOM's ``seed: ${seed}``, stay) with
  the selected values of the searched keys. With ``<out>`` on Hydra's search path a final
  experiment names it ``optimizer=<experiment>/<label>``; the analysis tools put
  ``<store>/../selected`` on it themselves;
* ``<experiment>.selection.md`` / ``.csv``: per optimizer the budget, the search space, how many
  trials finished, the selected values, their score and run id.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from drsom.analysis.runs import Run, load_store
from drsom.run_state import Status
from drsom.study import STUDIES
from drsom.tuning import objective

BY = ("final", "best")


def main(argv: list[str] | None = None, *, base_dir: Path | None = None) -> int:
    args = parse_args(argv, base_dir or Path.cwd())
    store = load_store(args.results, report=lambda line: print(line, file=sys.stderr))
    try:
        studies_dir = args.results.parent / STUDIES
        table, configs = select(store, args.experiment, args.by, studies_dir=studies_dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    folder = args.out / "optimizer" / args.experiment
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in configs.items():
        (folder / f"{name}.yaml").write_text(text)
    table.to_csv(args.out / f"{args.experiment}.selection.csv", index=False)
    text = selection_markdown(table, args.experiment, args.by)
    (args.out / f"{args.experiment}.selection.md").write_text(text)
    print(text)
    print(f"wrote {len(configs)} optimizer configs to {folder}", file=sys.stderr)
    return 0


def parse_args(argv: list[str] | None, base: Path) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", required=True, help="the tuning experiment's name")
    p.add_argument("--results", type=Path, default=base / "results" / "runs", help="run store")
    p.add_argument("--out", type=Path, default=base / "results" / "selected")
    p.add_argument("--by", choices=BY, default="final", help="validation accuracy at: (default)")
    return p.parse_args(argv)


def select(
    store: list[Run], experiment: str, by: str = "final", studies_dir: Path | None = None
) -> tuple[pd.DataFrame, dict]:
    """(the selection table, {config name: YAML text}) for the trials of ``experiment``.

    With ``studies_dir`` (the store's studies folder), each optimizer's stored study is checked
    against its runs and gives the budget it ran under. Raises ValueError (one line) when the
    store holds no finished trial of it, or a stored study disagrees with its runs."""
    trials = [r for r in store if r.config.get("experiment") == experiment]
    finished = [r for r in trials if r.status in (Status.FINISHED, Status.DIVERGED)]
    if not any(r.status == Status.FINISHED for r in finished):
        have = sorted({str(r.config.get("experiment")) for r in store if r.config})
        raise ValueError(
            f"experiment {experiment!r} has no finished trials in the store ({len(trials)} runs "
            f"of it; the store has runs of: {', '.join(have) or 'nothing'})"
        )
    studies: dict[tuple, list[Run]] = {}
    for r in trials:
        c = r.config
        studies.setdefault((c["data"]["name"], c["model"]["name"], r.key()[3]), []).append(r)
    rows, configs = [], {}
    for (data, model, label), runs in studies.items():
        scored = [(objective(r.summary, by), r.run_id, r) for r in runs]
        ranked = sorted((s for s in scored if not math.isnan(s[0])), key=_rank)
        settings = _settings(experiment, label)
        if studies_dir is not None:
            stored_budget = check_study(store, studies_dir, experiment, label, by)
            settings["budget"] = stored_budget or settings["budget"]
        row = {"data": data, "model": model, "optimizer": label}
        row |= {"display": runs[0].config["optimizer"].get("display") or label}
        row |= {"budget": settings["budget"], "search_space": _space(settings["space"])}
        row |= {"trials": len(runs), "finished": sum(r.status == Status.FINISHED for r in runs)}
        row |= {"diverged": sum(r.status == Status.DIVERGED for r in runs)}
        if not ranked or ranked[0][2].status != Status.FINISHED:
            rows.append(row | {"selected": "", "score": math.nan, "run_id": ""})
            continue
        score, rid, best = ranked[0]
        values = {k: _lookup(best.config, k) for k in settings["space"]}
        row |= {"selected": _space(values), "score": score, "run_id": rid}
        row |= {"test_acc_of_selected": (best.summary.get("final") or {}).get("test_acc")}
        rows.append(row)
        configs[label] = tuned_config(label, values, row, experiment, by)
    return pd.DataFrame(rows), configs


def check_study(
    store: list[Run], studies: Path, experiment: str, label: str, by: str
) -> int | None:
    """The budget of the stored study of ``label`` (``<studies>/<experiment>-<label>.journal``, the
    sweeper's default name), after checking it against the runs: ValueError (one line naming the
    run) where they disagree. None where there is no stored study (trials made before studies
    were stored)."""
    from drsom import study as stored

    path = studies / f"{experiment}-{label}.journal"
    if not path.is_file():
        return None
    scores = {r.run_id: (str(r.status), _score(r.summary, by)) for r in store}
    budget = None
    for study in stored.load_studies(path):
        scored_by = (study.user_attrs.get("drsom") or {}).get("objective", by)
        if scored_by != by:
            raise ValueError(
                f"study {study.study_name} scored its trials by --by {scored_by}, this selection "
                f"by --by {by}"
            )
        if problem := stored.disagreement(study, scores):
            raise ValueError(problem)
        budget = study.user_attrs.get("budget", budget)
    return budget


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
    from drsom.compose import suite_config

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
        f"# (budget {row['budget']}; {row['diverged']} diverged) by validation accuracy at the "
        f"{'final' if by == 'final' else 'validation-selected'} epoch: {row['score']:.4f}, "
        f"run {row['run_id']}.",
        f"# Search space: {row['search_space']}",
    ]
    node = {"defaults": [f"/optimizer/{label}@_here_", "_self_"]}
    node |= {key.removeprefix("optimizer."): value for key, value in values.items()}
    return "\n".join(header) + "\n" + yaml.safe_dump(node, sort_keys=False)


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
        lines.append(
            f"| {r['data']} | {r['model']} | {r['display']} | {r['budget']} | "
            f"{r['finished']}/{r['trials']} ({r['diverged']}) | {r['search_space']} | "
            f"{r['selected'] or 'none finished'} | {score} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
