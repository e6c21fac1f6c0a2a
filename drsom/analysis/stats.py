"""Statistics over seeds: confidence intervals, paired comparisons, performance profiles.

Intervals are **Student-t** by default (``method="t"``): for the 3-10 seeds an experiment runs,
the mean over seeds is ``x̄ ± t_{(1+level)/2, n-1} · s / √n`` with ``s`` the sample standard
deviation (ddof=1). The percentile bootstrap (``method="bootstrap"``) is the alternative, but for
so few seeds it is degenerate: a resample of 3 values has only 10 distinct means, all inside
``[min, max]`` of the data, so its "95%" interval is at most the range of the 3 values, which
holds the median of a continuous distribution only 3/4 of the time (1 - 2·2⁻³: unless all three
fall on one side), while the t interval widens by ``t_{0.975,2} = 4.30`` for the two degrees of
freedom ([1, 2, 3]: bootstrap [1, 3], t [-0.48, 4.48]). rliable's stratified bootstrap pools
tasks, not seeds of one cell; nothing here needs it, so it is not a dependency.

Performance profiles follow Dolan & Moré (2002), as AlgoPerf uses them for time-to-target (Dahl
et al. 2023, "Benchmarking Neural Network Training Algorithms"): with ``t[w, o]`` the cost of
optimizer ``o`` on workload ``w`` and ``r[w, o] = t[w, o] / min_o' t[w, o']``,
``ρ_o(τ) = |{w : r[w, o] ≤ τ}| / |W|``. A target not reached (NaN or inf) is never within any τ.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as _scipy_stats

METHODS = ("t", "bootstrap")
# bootstrap resamples: the Monte-Carlo error of the 2.5% quantile's level is
# sqrt(0.025 * 0.975 / 10_000) = 0.16 percentage points
RESAMPLES = 10_000


class Interval(NamedTuple):
    """A mean with its confidence interval over ``n`` values (``low``/``high`` NaN for n < 2)."""

    mean: float
    low: float
    high: float
    n: int


class Paired(NamedTuple):
    """Mean of per-seed differences ``a - b`` with its interval over the ``n`` paired seeds;
    ``unpaired``: seeds only one side has (left out)."""

    mean: float
    low: float
    high: float
    n: int
    unpaired: int


def interval(
    values: Iterable[float],
    level: float = 0.95,
    method: str = "t",
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> Interval:
    """The mean of the finite ``values`` and its ``level`` confidence interval.

    ``"t"``: ``x̄ ± t_{(1+level)/2, n-1} · s/√n`` (s with ddof=1). ``"bootstrap"``: the
    ``(1-level)/2`` and ``(1+level)/2`` quantiles of the means of ``resamples`` resamples with
    replacement, drawn by ``numpy.random.default_rng(seed)`` (the same numbers every call).
    NaN (not measured) and inf (not reached) are left out: ``n`` counts the values used. n=1 gives
    ``(x, nan, nan, 1)``, no values ``(nan, nan, nan, 0)``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}: a confidence level is in (0, 1), e.g. 0.95")
    if method not in METHODS:
        raise ValueError(f"method={method!r}: accepted are {', '.join(METHODS)}")
    x = np.asarray(list(values), dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    if method == "t":
        half = float(_scipy_stats.t.ppf((1 + level) / 2, n - 1)) * float(x.std(ddof=1)) / n**0.5
        return Interval(mean, mean - half, mean + half, n)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(mean, float(low), float(high), n)


def paired_difference(
    a_by_seed: Mapping[int, float] | pd.Series,
    b_by_seed: Mapping[int, float] | pd.Series,
    level: float = 0.95,
    method: str = "t",
    seed: int = 0,
) -> Paired:
    """``a - b`` paired by seed: the interval (:func:`interval`) of the per-seed differences
    ``d_s = a_s - b_s`` over the seeds both sides have a finite value for. Pairing removes what
    the seed shares between the two (data order, initialisation), so the interval is the one
    of the difference itself, narrower than two separate intervals suggest when seeds correlate.
    """
    a, b = _by_seed(a_by_seed, "a_by_seed"), _by_seed(b_by_seed, "b_by_seed")
    both = a.index.intersection(b.index)
    unpaired = len(a.index.symmetric_difference(b.index))
    d = interval(a[both] - b[both], level, method, seed)
    return Paired(d.mean, d.low, d.high, d.n, unpaired)


def _by_seed(values: Mapping[int, float] | pd.Series, what: str) -> pd.Series:
    s = pd.Series(values, dtype=float) if isinstance(values, Mapping) else values.astype(float)
    if s.index.has_duplicates:
        raise ValueError(f"{what}: seeds {sorted(set(s.index[s.index.duplicated()]))} repeat")
    return s[np.isfinite(s)]  # a seed without a (finite) value is one that side does not have


def performance_ratios(costs: pd.DataFrame) -> pd.DataFrame:
    """``r[w, o] = t[w, o] / min_o' t[w, o']`` per workload (row) and optimizer (column); a
    cost not reached (NaN or inf) is inf, and so is every ratio of a workload nobody reached."""
    t = costs.astype(float).fillna(math.inf)
    if (t <= 0).to_numpy().any():
        raise ValueError("performance profile: costs to target are positive (epochs, seconds)")
    return t.div(t.min(axis=1), axis=0).fillna(math.inf)  # inf / inf: nobody reached it


def performance_profile(costs: pd.DataFrame, taus: Sequence[float]) -> pd.DataFrame:
    """``ρ_o(τ)``: the fraction of workloads (rows of ``costs``) on which optimizer ``o``
    (column) costs at most ``τ`` times the best optimizer of that workload; one row per τ.

    Ties are all best (ratio 1); "within" includes the bound (``r ≤ τ``); a workload no
    optimizer reached stays in the denominator, so no curve reaches 1 (Dolan & Moré count every
    problem). τ < 1 is refused: no ratio is below 1.
    """
    taus = [float(t) for t in taus]
    if not taus or any(not t >= 1 for t in taus):
        raise ValueError(f"taus={taus!r}: a performance profile's factors are >= 1")
    if costs.empty:
        raise ValueError("performance profile: no workloads")
    r = performance_ratios(costs).to_numpy()
    within = np.stack([(r <= t).mean(axis=0) for t in taus])
    return pd.DataFrame(within, index=pd.Index(taus, name="tau"), columns=costs.columns)


# ----------------------------------------------------------------------------- targets
TARGETS_ACCEPTED = "a percent in (1, 100) or a fraction in (0, 1), e.g. 93 or 0.93"


def check_targets(values: Iterable[float | str]) -> tuple[float, ...]:
    """``--targets`` as fractions in (0, 1), the store's accuracies.

    The convention of ``make_tables.py``: a value above 1 is percent (93 -> 0.93), one below 1 a
    fraction (0.93). 1 itself is refused (1% or 100%?), as are 0, negatives, 100 and above, NaN
    and anything not a number: one line naming ``--targets`` and the accepted range.
    """
    out = []
    for v in values:
        try:
            t = float(v)
        except (TypeError, ValueError):
            t = math.nan
        if not (0 < t < 1 or 1 < t < 100):
            raise ValueError(f"--targets: {v!r} is not a target accuracy; give {TARGETS_ACCEPTED}")
        out.append(t / 100 if t > 1 else t)
    return tuple(out)
