"""Performance profiles of the cost to a target accuracy across workloads (AlgoPerf style).

A workload is one experiment's dataset x model. On each, an optimizer's cost is the mean over its
finished seeds of the gradient equivalents (``drsom.analysis.costs``) up to the first epoch at or
above the target; an optimizer one of whose finished seeds never got there has not reached it
(inf), and so has one that has no finished run on that workload (it is named "ran k of n" in the
legend). A label with several variants on one workload (an lr sweep) takes its cheapest variant,
which the note says. The profile (``stats.performance_profile``, Dolan & Moré 2002):

    rho_o(tau) = |{w : cost[w, o] <= tau min_o' cost[w, o']}| / |W|

drawn as steps: it only changes at the ratios that occur.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping

import numpy as np
import pandas as pd

from drsom.analysis import figures
from drsom.analysis.stats import performance_profile, performance_ratios
from drsom.analysis.tables import target_name
from drsom.store.state import Status

TAU_MARGIN = 1.25  # the axis runs this far past the largest finite ratio


def workload_costs(
    rows_by_experiment: Mapping[str, pd.DataFrame], target: float, cost: str = "grad_equiv"
) -> tuple[pd.DataFrame, list[str]]:
    """(costs, tuned): one row per workload ``"<experiment>: <data> / <model>"``, one column per
    optimizer label (NaN: no finished run there; inf: not reached), from ``tables.run_rows``
    frames; ``tuned`` the labels whose cheapest of several variants was taken somewhere."""
    column = f"{cost}_to_{target_name(target)}"
    costs: dict[str, dict[str, float]] = {}
    tuned: list[str] = []
    for experiment, rows in rows_by_experiment.items():
        done = rows[rows["status"] == Status.FINISHED]
        if "variant" not in done:
            done = done.assign(variant=done["model"] + "-" + done["optimizer"])
        for (data, model), group in done.groupby(["data", "model"], sort=False):
            here = costs.setdefault(f"{experiment}: {data} / {model}", {})
            for label, runs in group.groupby("optimizer", sort=False):
                per_variant = []
                for _, cell in runs.groupby("variant", sort=False):
                    values = cell[column].to_numpy(float) if column in cell else np.array([np.nan])
                    reached = len(values) and np.isfinite(values).all()
                    per_variant.append(float(values.mean()) if reached else math.inf)
                if len(per_variant) > 1 and label not in tuned:
                    tuned.append(label)
                here[label] = min(per_variant)
    frame = pd.DataFrame.from_dict(costs, orient="index")
    return frame, tuned


def profile_steps(costs: pd.DataFrame) -> pd.DataFrame:
    """The profile at every ratio that occurs (where the steps are), from 1 to
    ``TAU_MARGIN`` times the largest finite ratio: one row per tau, one column per optimizer."""
    r = performance_ratios(costs).to_numpy()
    finite = np.unique(r[np.isfinite(r)])
    top = float(finite.max()) if len(finite) else 1.0
    taus = sorted({1.0, *map(float, finite), max(top * TAU_MARGIN, 1.0 + 1e-9)})
    return performance_profile(costs, taus)


def profile_figure(
    costs: pd.DataFrame,
    title: str,
    shown: dict[str, figures.Look] | None = None,
    note: str = "",
) -> figures.plt.Figure:
    """The step curves of :func:`profile_steps`, one per optimizer, on a log tau axis."""
    plt = figures.plt
    steps = profile_steps(costs)
    taus = steps.index.to_numpy()
    ran = costs.notna().sum(axis=0)
    with plt.rc_context(figures.STYLE):
        fig, ax = plt.subplots(figsize=(7, 4.4), layout="constrained")
        taken: list = []
        for label in steps.columns:
            c = figures.color(label, taken=taken, shown=shown)
            taken.append(c)
            text = figures.name(label, shown)
            if ran[label] < len(costs):
                text += f" (ran {ran[label]} of {len(costs)})"
            ax.step(taus, steps[label].to_numpy(), where="post", color=c, lw=1.8, label=text)
        ax.set_xscale("log")
        ax.set_xlim(1.0, taus[-1])
        ax.set_ylim(-0.03, 1.03)
        plain = figures.FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.set_xlabel("τ: cost within this factor of the workload's best")
        ax.set_ylabel(f"fraction of the {len(costs)} workloads")
        ax.grid(True, which="major", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncol=min(3, len(labels)),
            fontsize=8,
            frameon=False,
        )
        fig.suptitle(title, fontsize=10)
        if note:  # where the numbers come from, small, under the title
            ax.set_title("\n".join(textwrap.wrap(note, 120)), fontsize=7.5, color="0.4")
    return fig
