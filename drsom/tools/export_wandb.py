"""Pull the runs of a wandb project into the local store, so figures can be made from them.

    drsom-export-wandb --project drsom-bench [--entity TEAM] --out results/runs
    drsom-export-wandb --project drsom-bench --experiment drsom_vs_baselines_resnet18

For runs logged on a cluster whose folders are not at hand: each wandb run becomes
``<out>/<run_id>/`` with ``config.yaml`` (the resolved config, unflattened), ``metrics.csv`` (the
per-epoch rows), ``steps.csv`` (the loss and the optimizer's diagnostics) and ``summary.json``
(status, final and best accuracy, cost), exactly what ``drsom-curves`` and ``drsom-tables``
read. The run id is the one the runner logged, so an exported run lands where the cluster wrote
it. A local run that is already finished or diverged is kept (the local store is the source of
truth) unless ``--force``. Needs ``wandb login`` (or WANDB_API_KEY) and network access.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from drsom.store.folder import RunDir, write_csv
from drsom.store.identity import run_id
from drsom.store.state import FINAL_KEYS, TERMINAL, WRITTEN, Status, run_state, selected
from drsom.training.loop import METRIC_COLUMNS, STEP_COLUMNS

# wandb's run.state when the runner's own status never reached wandb (its summary is written at
# the end of a run): a crash or a kill leaves the run resumable, like the local store says.
WANDB_STATES = {"crashed": Status.FAILED, "failed": Status.FAILED, "killed": Status.INTERRUPTED}
# Keys the runner adds to the logged config that are not config keys.
NOT_CONFIG = ("run_id", "compiled")


def main(argv: list[str] | None = None, *, base_dir: Path | None = None) -> int:
    args = parse_args(argv, base_dir or Path.cwd())
    import wandb

    path = f"{args.entity}/{args.project}" if args.entity else args.project
    try:
        done = export(wandb.Api(), path, args.out, experiment=args.experiment, force=args.force)
    except Exception as exc:  # network, authentication, unknown project: one line
        print(f"error: cannot read wandb project {path}: {' '.join(str(exc).split())[:300]}")
        return 2
    for rid, status in done:
        print(f"{status:<12} {rid}")
    print(f"{len(done)} run(s) from {path} in {args.out}")
    return 0


def parse_args(argv: list[str] | None, base: Path) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--project", required=True)
    p.add_argument("--entity", help="wandb user or team (default: your default entity)")
    p.add_argument("--out", type=Path, default=base / "results" / "runs")
    p.add_argument("--experiment", help="only runs whose config has experiment=<NAME>")
    p.add_argument("--force", action="store_true", help="overwrite finished local runs too")
    return p.parse_args(argv)


def export(
    api: Any, path: str, out: Path, *, experiment: str | None = None, force: bool = False
) -> list[tuple[str, str]]:
    """Write every run of ``path`` into ``out``; (run id, what happened) per run."""
    filters = {"config.experiment": experiment} if experiment else None
    done = []
    for run in api.runs(path, filters=filters):
        config = unflatten(run.config)
        if experiment and config.get("experiment") != experiment:
            continue  # also when the server ignored the filter
        done.append(export_run(run, config, out, f"{path}/{run.id}", force=force))
    return done


def export_run(
    run: Any, config: dict[str, Any], out: Path, source: str, *, force: bool
) -> tuple[str, str]:
    rid = run.config.get("run_id") or _run_id(config) or run.name
    folder = RunDir(out / rid)
    local = run_state(folder)  # the store's one reader: a broken local run is not kept
    if local.status in TERMINAL and not force:
        return rid, f"kept ({local.status} locally)"
    for key in NOT_CONFIG:
        config.pop(key, None)
    history = list(run.scan_history())  # every row: run.history() would sample 500 of them
    metrics = epoch_rows(history)
    steps = step_rows(history)
    summary = build_summary(run, config, metrics, rid, source)
    folder.write_config(config)
    # the optimizer's columns after the loop's, in the order of its first logged row
    write_csv(folder.metrics, [*METRIC_COLUMNS, *_extra(metrics, METRIC_COLUMNS)], metrics)
    if steps:
        write_csv(folder.steps, [*STEP_COLUMNS, *_extra(steps, STEP_COLUMNS)], steps)
    folder.write_summary(summary)
    written = run_state(folder)  # what every reader will make of it, said now
    if written.problem:
        return rid, f"{written.status}: {written.problem}"
    return rid, summary["status"]


def _run_id(config: dict[str, Any]) -> str | None:
    try:
        return run_id(config)
    except (KeyError, TypeError):  # not a config the runner wrote
        return None


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"trainer.epochs": 200}`` -> ``{"trainer": {"epochs": 200}}``; wandb's own keys dropped."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith("_"):  # _wandb and other bookkeeping
            continue
        *parents, leaf = key.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf].update(unflatten(value))
        else:
            node[leaf] = unflatten(value) if isinstance(value, Mapping) else value
    return tree


def epoch_rows(history: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The per-epoch rows (they carry ``train_loss``), one per epoch: a resumed run's last wins.

    The optimizer's epoch means (``<key>_mean``, ``drsom.training.loop.Trainer.metric_columns``)
    come with them."""
    rows: dict[int, dict[str, Any]] = {}
    for h in history:
        if _value(h, "train_loss") is None or _value(h, "epoch") is None:
            continue
        keys = [*METRIC_COLUMNS, *(k for k in h if k.endswith("_mean"))]
        row = {c: _value(h, c) for c in keys}
        row["epoch"] = int(row["epoch"])
        row["step"] = int(_value(h, "step") if _value(h, "step") is not None else h["_step"])
        rows[row["epoch"]] = row
    return [rows[e] for e in sorted(rows)]


def step_rows(history: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The steps.csv rows the runner logged: ``step/<column>`` and the optimizer's diagnostics
    as ``opt/<key>`` (``drsom.job.runner._step_log``)."""
    rows = []
    for h in history:
        if "step/loss" not in h:
            continue
        row = {"step": int(h["_step"])}
        row.update({k[5:]: _value(h, k) for k in h if k.startswith("step/")})
        row.update({k[4:]: _value(h, k) for k in h if k.startswith("opt/")})
        rows.append(row)
    return rows


def _extra(rows: list[dict[str, Any]], fixed: Iterable[str]) -> list[str]:
    return [k for k in rows[0] if k not in fixed] if rows else []


def build_summary(
    run: Any, config: dict[str, Any], metrics: list[dict[str, Any]], rid: str, source: str
) -> dict[str, Any]:
    """summary.json as the runner writes it, from wandb's summary and the exported rows."""
    logged = {k: v for k, v in dict(run.summary).items() if not k.startswith("_")}
    last = metrics[-1] if metrics else {}
    epochs = (config.get("trainer") or {}).get("epochs")
    summary = {k: logged[k] for k in SUMMARY_SCALARS if k in logged}
    summary.update(
        run_id=rid,
        status=_status(run, logged, last, epochs),
        experiment=config.get("experiment"),
        data=(config.get("data") or {}).get("name"),
        model=(config.get("model") or {}).get("name"),
        optimizer=(config.get("optimizer") or {}).get("label"),
        seed=config.get("seed"),
        epochs=epochs,
        epoch=last.get("epoch", 0),
        step=last.get("step", 0),
        final={k: last.get(k) for k in FINAL_KEYS},
        selected=selected(metrics),
        train_seconds=last.get("train_seconds"),
        total_seconds=last.get("total_seconds"),
        counts={k: last.get(k) for k in ("forward", "grad", "hvp")},
        wandb_id=run.id,
        exported_from={"wandb": source, "state": run.state},
    )
    return summary


# The runner's flat summary fields worth keeping (the rest are recomputed from the rows above).
SUMMARY_SCALARS = (
    "config_hash",
    "group",
    "attempts",
    "device",
    "device_name",
    "amp",
    "compiled",
    "compile_note",
    "git_commit",
    "git_dirty",
    "git_diff_sha",
    "code_origin",
    "data_fingerprint",
    "threads",
    "started_at",
    "ended_at",
    "diverged_epoch",
    "diverged_step",
    "error",
)


def _status(run: Any, logged: Mapping[str, Any], last: Mapping[str, Any], epochs: Any) -> str:
    if logged.get("status") in WRITTEN and run.state != "running":
        return logged["status"]
    if run.state == "finished":
        complete = epochs is not None and last.get("epoch", 0) >= epochs
        return Status.FINISHED if complete else Status.INTERRUPTED
    return WANDB_STATES.get(run.state, Status.RUNNING)


def _value(row: Mapping[str, Any], key: str) -> Any:
    """A logged value, None for absent or NaN (what the store writes as an empty cell)."""
    v = row.get(key)
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


if __name__ == "__main__":
    sys.exit(main())
