"""Curve figures from ``runs.metrics_frame``: one line per variant, a band over its seeds.

How an optimizer is shown comes from its runs' configs (``display``, ``color``, ``marker`` of the
optimizer config; :func:`looks`): every figure draws it in the same colour, so a reader can compare
figures side by side, and the suite's DRSOM variants carry a marker each, so they stay apart from
the baseline whose hue they resemble and survive grey-scale printing. A config without a colour
gets one fixed by its label. The first optimizer of a figure's order (the experiment's first, the
method under study) is drawn thicker and on top. Published curves (``--reference``) are drawn
dashed in the colour of the optimizer they belong to.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node or in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from drsom.analysis.costs import GRAD_EQUIV_LABEL, RAW_LABEL  # noqa: E402

# For configs without a colour: one fixed by the label's hash, the same in every figure.
FALLBACK = plt.get_cmap("tab20").colors


class Look(NamedTuple):
    """How an optimizer label is shown: its config's ``display``, ``color`` and ``marker``."""

    display: str
    color: str | None = None
    marker: str | None = None


def looks(runs: Sequence) -> dict[str, Look]:
    """Per optimizer label, how its runs' configs say to show it (the first run's, for a label
    whose runs disagree)."""
    out: dict[str, Look] = {}
    for r in runs:
        opt = r.config["optimizer"]
        label = opt["label"]
        if label not in out:
            out[label] = Look(opt.get("display") or label, opt.get("color"), opt.get("marker"))
    return out


# train_eval_*: the training set measured as the test set is (eval mode, unaugmented);
# train_acc/train_loss: the running means of the training loop (train mode, augmented inputs,
# parameters changing through the epoch), the "train accuracy" most papers plot.
METRICS = {
    "train_eval_acc": "train accuracy (%)",
    "test_acc": "test accuracy (%)",
    "val_acc": "validation accuracy (%)",
    "train_acc": "running train accuracy, train mode (%)",
    "train_eval_loss": "train loss (cross-entropy)",
    "test_loss": "test loss (cross-entropy)",
    "val_loss": "validation loss (cross-entropy)",
    "train_loss": "running train loss, train mode (cross-entropy)",
}
# --x name: (metrics_frame column, axis label). grad_equiv weighs forwards, gradients and HVPs by
# their measured times (drsom.analysis.costs); grads_hvps is the raw count without forwards.
X_AXES = {
    "epoch": ("epoch", "epoch"),
    "time": ("train_seconds", "training time"),
    "grad_equiv": ("grad_equiv", GRAD_EQUIV_LABEL),
    "grads_hvps": ("grads_hvps", RAW_LABEL),
}
COUNTS = ("epoch", "grads_hvps")  # integer axes


# matplotlib's defaults, a little larger for print, without the top and right frame lines
STYLE = {
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


ZOOM_MIN_EPOCHS = 8  # fewer epochs: nothing to magnify
FEW_POINTS = 10  # curves with at most this many points get point markers
ZOOM_SPAN = 5.0  # accuracy points below the best curve that the magnified panel still shows
# On a cost axis a curve that ends this many times further than the median curve (DRSOM-HVP:
# 10,000 gradient equivalents where the first-order ones end near 1,500) would squeeze every other
# curve into a sliver: the frame ends after the others, and the far curve is named in a corner.
FAR_END = 2.5


def color(
    label: str, setting: str = "", taken: Sequence = (), shown: dict[str, Look] | None = None
) -> str | tuple:
    """The label's colour (its config's, else one fixed by the label); a variant of it
    (``setting``, e.g. ``lr=0.01``) drawn beside other variants of the same label gets one fixed
    by the two together, in every figure, or the next free one of the palette when that is
    ``taken`` in the same figure."""
    own = (shown or {}).get(label)
    if own is not None and own.color and not setting:
        return own.color
    key = f"{label} {setting}" if setting else label
    start = int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(FALLBACK)
    for i in range(len(FALLBACK)):
        pick = FALLBACK[(start + i) % len(FALLBACK)]
        if pick not in taken:
            return pick
    return FALLBACK[start]


def name(label: str, shown: dict[str, Look] | None = None) -> str:
    """How ``label`` is written in figures and tables: its config's ``display``."""
    own = (shown or {}).get(label)
    return own.display if own is not None else label


def aggregate(frame: pd.DataFrame, metric: str, x: str) -> pd.DataFrame:
    """Per variant and epoch: the mean x, and the metric's mean, std, min, max and count.

    Only the seeds of one variant (one config) are pooled; they are aligned by epoch (time and
    gradient counts differ a little from seed to seed), so x is the mean over seeds of the
    column ``--x`` names at that epoch.
    """
    column = X_AXES[x][0]
    d = frame.dropna(subset=[metric])  # epochs without evaluation (trainer.eval_every)
    if "variant" not in d:  # frames made by hand: one variant per label
        d = d.assign(variant=d["optimizer"], setting="")
    g = d.groupby(["variant", "optimizer", "setting", "epoch"], sort=True)
    out = g.agg(
        x=(column, "mean"),
        mean=(metric, "mean"),
        std=(metric, "std"),  # sample std (ddof=1)
        lo=(metric, "min"),
        hi=(metric, "max"),
        n=(metric, "count"),
    ).reset_index()
    return out


def band(agg: pd.DataFrame, log_scale: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """±1 std where at least 3 seeds share the epoch, their min-max where 2, nothing where 1.

    On a log scale (losses) always min-max: mean - std can be negative there (one seed's loss
    100x the others'), which a log axis cannot draw.
    """
    std_ok = (agg["n"] >= 3) & (not log_scale)
    lower = np.where(std_ok, agg["mean"] - agg["std"].fillna(0), agg["lo"])
    upper = np.where(std_ok, agg["mean"] + agg["std"].fillna(0), agg["hi"])
    return lower, upper


class Curve(NamedTuple):
    """One drawn line (and its band, absent for published curves), kept for the zoom panel."""

    name: str  # the optimizer's display name
    epochs: np.ndarray  # the epoch of each point, whatever the x-axis
    xs: np.ndarray
    ys: np.ndarray
    lower: np.ndarray | None
    upper: np.ndarray | None
    style: dict


def curve_axes(
    ax: plt.Axes,
    frame: pd.DataFrame,
    metric: str,
    x: str = "epoch",
    *,
    order: Sequence[str] | None = None,
    legend_notes: dict[str, str] | None = None,
    reference: pd.DataFrame | None = None,
    shown: dict[str, Look] | None = None,
) -> list[Curve]:
    """Draw ``metric`` against ``x``: a solid line per optimizer (mean over its runs) and a band.

    ``frame``: rows of ``metrics_frame`` for one model. ``reference``: published curves of the
    same model (fractions), drawn dashed for the optimizers present here (epoch axis only).
    ``shown``: how each label is shown (:func:`looks`). Returns what was drawn, our curves first.
    """
    scale = 100.0 if metric.endswith("_acc") else 1.0
    agg = aggregate(frame, metric, x)
    present = set(agg["optimizer"])
    labels = [lbl for lbl in dict.fromkeys([*(order or []), *sorted(present)]) if lbl in present]
    # variants in the labels' order, those of one label by their settings
    variants = agg[["optimizer", "setting", "variant"]].drop_duplicates()
    variants = variants.assign(rank=variants["optimizer"].map(labels.index))
    variants = variants.sort_values(["rank", "setting"])
    x_scale, x_unit = _x_scale(agg["x"].max() if len(agg) else 0.0, x)
    runs_of = frame.groupby("variant" if "variant" in frame else "optimizer")["run_id"].nunique()
    curves = []
    for lbl, setting, variant in variants[["optimizer", "setting", "variant"]].itertuples(
        index=False
    ):
        a = agg[agg["variant"] == variant]
        seeds = runs_of[variant]
        title = f"{name(lbl, shown)} {setting}" if setting else name(lbl, shown)
        note = (legend_notes or {}).get(variant) or (legend_notes or {}).get(lbl)
        text = f"{title} ({seeds} seed{'s' if seeds != 1 else ''}"
        text += f"; {note})" if note else ")"
        xs = a["x"].to_numpy() / x_scale
        lower, upper = band(a, log_scale=metric.endswith("_loss"))
        # a short run shows where its few measurements are (marked configs always do)
        own_marker = getattr((shown or {}).get(lbl), "marker", None)
        marker = own_marker or ("o" if len(xs) <= FEW_POINTS else None)
        lead = lbl == labels[0]
        style = {
            "color": color(lbl, setting, [c.style["color"] for c in curves], shown),
            "lw": 2.4 if lead else 1.8,
            "zorder": 3 if lead else 2,
            "marker": marker,
            "markersize": 5 if own_marker else 3.5,
            "markevery": max(1, len(xs) // 6) if marker else None,
        }
        mean = a["mean"].to_numpy() * scale
        curve = Curve(title, a["epoch"].to_numpy(), xs, mean, lower * scale, upper * scale, style)
        _draw(ax, curve, label=text, band_alpha=_band_alpha(len(variants)))
        curves.append(curve)
    if reference is not None and metric in reference.columns:
        if x != "epoch":
            raise ValueError("published curves are per epoch: use --x epoch with --reference")
        for lbl in labels:
            r = reference[reference["optimizer"] == lbl].sort_values("epoch")
            if len(r):
                style = {"color": color(lbl, shown=shown), "lw": 1.2, "ls": "--", "zorder": 1}
                epochs = r["epoch"].to_numpy()
                ys = r[metric].to_numpy() * scale
                curve = Curve(name(lbl, shown), epochs, epochs, ys, None, None, style)
                _draw(ax, curve, label=f"{name(lbl, shown)} (published, 1 run)")
                curves.append(curve)
    ax.set_xlabel(f"{X_AXES[x][1]}{x_unit}")
    ax.set_ylabel(METRICS.get(metric, metric))
    _axis_style(ax, metric, x)
    cap, far = x_frame(curves, x)
    if far:
        ax.set_xlim(right=cap)
        ends = ", ".join(f"{c.name} (to {c.xs.max():,.0f})" for c in far)
        ax.text(0.98, 0.03, f"beyond the frame: {ends}", transform=ax.transAxes)
        ax.texts[-1].set(ha="right", va="bottom", fontsize=8.5, color="0.3")
    return curves


def x_frame(curves: list[Curve], x: str) -> tuple[float, list[Curve]]:
    """Where a cost axis ends, and the curves that run past it (:data:`FAR_END`); on other axes,
    or when no curve runs that far, the frame holds every curve."""
    ours = [c for c in curves if c.lower is not None and len(c.xs)]
    ends = np.array([c.xs.max() for c in ours])
    if x not in ("grad_equiv", "grads_hvps", "time") or len(ours) < 3:
        return math.inf, []
    far = [c for c, end in zip(ours, ends, strict=True) if end > FAR_END * np.median(ends)]
    if not far:
        return math.inf, []
    near = max(end for c, end in zip(ours, ends, strict=True) if c not in far)
    return 1.1 * near, far


def _draw(ax: plt.Axes, curve: Curve, label: str | None = None, band_alpha: float = 0.18) -> None:
    ax.plot(curve.xs, curve.ys, **curve.style, label=label)
    if curve.lower is not None:
        ax.fill_between(
            curve.xs, curve.lower, curve.upper, color=curve.style["color"], alpha=band_alpha, lw=0
        )


def _axis_style(ax: plt.Axes, metric: str, x: str) -> None:
    if metric.endswith("_loss"):
        ax.set_yscale("log")
        # 0.2 rather than 2x10^-1; minor ticks at 2, 3 and 5 labelled too unless the range spans
        # more than 2.5 decades (losses fall from ~2.3 to 0.01-0.3 in these figures)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: _minor_log_label(ax, v)))
    if x in COUNTS:  # counts: integer ticks (12.5 must not print as "12")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if x in ("grads_hvps", "grad_equiv"):
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.grid(True, which="major", alpha=0.3)
    ax.margins(x=0.01)


def _minor_log_label(ax: plt.Axes, value: float) -> str:
    low, high = ax.get_ylim()
    mantissa = round(value / 10 ** np.floor(np.log10(value)))
    return f"{value:g}" if mantissa in (2, 3, 5) and np.log10(high / low) <= 2.5 else ""


def zoom_axes(ax: plt.Axes, curves: list[Curve], metric: str, x: str, xlabel: str) -> None:
    """The second half of training (by epoch, whatever the x-axis), magnified: there the
    accuracies that tell optimizers apart sit within a point or two of each other, squeezed by
    the first epochs' range. A panel of its own, not an inset, so it never covers a curve. The
    y-range fits the leaders (the curves whose median there is within ``ZOOM_SPAN`` points of the
    best one) and their bands; a curve entirely below it is named in a corner instead of
    stretching the panel back to the full range (published curves are cut off at the frame)."""
    ours = [c for c in curves if c.lower is not None]
    last = int(max(c.epochs.max() for c in ours))
    first = last // 2
    cap, _ = x_frame(curves, x)
    parts = [_part(c, (c.epochs >= first) & (c.xs <= cap)) for c in ours]
    parts = [p for p in parts if len(p.xs)]  # a run that diverged early has no second half
    best = max(float(np.nanmedian(p.ys)) for p in parts)
    leaders = [p for p in parts if float(np.nanmedian(p.ys)) >= best - ZOOM_SPAN]
    low = min(np.nanmin(p.lower) for p in leaders)
    high = max(np.nanmax(p.upper) for p in leaders)
    pad = max(0.2, 0.08 * (high - low))
    low, high = low - pad, high + pad
    shown = [p for p in parts if np.nanmax(p.ys) >= low]
    for part in shown:
        _draw(ax, part, band_alpha=_band_alpha(len(ours)))
    start, end = min(p.xs.min() for p in shown), max(p.xs.max() for p in shown)
    for c in curves:
        if c.lower is None:  # published: over our x-range only
            _draw(ax, _part(c, (c.xs >= start) & (c.xs <= end)))
    below = [p.name for p in parts if np.nanmax(p.ys) < low]
    if below:
        ax.text(0.98, 0.03, f"below the frame: {', '.join(below)}", transform=ax.transAxes)
        ax.texts[-1].set(ha="right", va="bottom", fontsize=8.5, color="0.3")
    ax.set_ylim(low, high)
    ax.set_xlim(start, end)
    _axis_style(ax, metric, x)
    # on a cost axis the panel is still cut by epoch: the second half of each run, wherever it
    # lies on that axis
    what = f"epochs {first}–{last}" if x == "epoch" else f"each run's epochs {first}–{last}"
    ax.set_title(f"{what}, magnified", fontsize=9.5)
    ax.set_xlabel(xlabel)


def _part(c: Curve, keep: np.ndarray) -> Curve:
    """The points of ``c`` where ``keep``; markers on every other point (few points remain)."""
    bounds = (None, None) if c.lower is None else (c.lower[keep], c.upper[keep])
    style = {**c.style, "markevery": None if c.style.get("marker") is None else 2}
    return Curve(c.name, c.epochs[keep], c.xs[keep], c.ys[keep], *bounds, style)


def _band_alpha(lines: int) -> float:
    """Many overlapping bands turn to mud: fainter ones when there are more than a few lines."""
    return 0.18 if lines <= 4 else 0.08


def _x_scale(largest: float, x: str) -> tuple[float, str]:
    """Seconds shown in s, min or h, whichever keeps the tick labels short."""
    if x != "time":
        return 1.0, ""
    if largest > 3 * 3600:
        return 3600.0, " (h)"
    if largest > 600:
        return 60.0, " (min)"
    return 1.0, " (s)"


def protocol_title(facts: dict, seeds: int) -> str:
    """``digits (sklearn), 1,347 train images, CNN, 3 seeds, CPU`` + the schedule, two lines
    (the names are the configs' ``display``; the image count is what the run read)."""
    n = facts.get("train_images")
    dataset = f"{facts['data_display']}, {n:,} train images" if n else facts["data_display"]
    device = facts["device"]
    where = "CPU" if device == "cpu" else "GPU" if device == "cuda" else device
    if device == "cuda" and facts.get("device_name"):
        where = f"GPU ({facts['device_name']})"
    line1 = f"{dataset}, {facts['model_display']}, "
    line1 += f"{seeds} seed{'s' if seeds != 1 else ''}, {where}"
    line2 = f"{facts['epochs']} epochs, batch {facts['batch_size']}, {facts['schedule']}"
    return f"{line1}\n{line2}"


def curve_figure(
    frame: pd.DataFrame,
    metric: str,
    x: str,
    title: str,
    preset: str | None = None,
    note: str = "",
    **kwargs,
) -> plt.Figure:
    """A print-sized figure: the curves, for accuracies (given enough epochs) a magnified panel
    of the second half beside them, and the legend below both, where it hides nothing.

    ``preset`` (``drsom.analysis.paper.PRESETS``): the paper's width and fonts instead, "column"
    (3.3 in) without the magnified panel, which would not fit; the height grows with the title
    and legend so the axes keep the preset's height. ``note``: where the numbers come from
    (:func:`caption`; with a preset, under the legend's title, where the layout leaves it room).
    Title lines longer than the figure is wide are wrapped."""
    from drsom.analysis import paper

    zoom = metric.endswith("_acc") and frame["epoch"].nunique() >= ZOOM_MIN_EPOCHS
    rc, wide, narrow = STYLE, (10, 4.8), (7, 4.8)
    if preset is not None:
        rc = paper.rc(preset)  # refuses an unknown preset
        p = paper.PRESETS[preset]
        title = _wrap(title, p.width, p.font)
        lines = title.count("\n") + 1
        wide = narrow = (p.width, p.height + 0.16 * lines + 0.5)
        zoom = zoom and preset != "column"
    with plt.rc_context(rc):
        if zoom:
            fig, (ax, zax) = plt.subplots(
                1, 2, figsize=wide, width_ratios=(1.4, 1), layout="constrained"
            )
        else:
            fig, ax = plt.subplots(figsize=narrow, layout="constrained")
        curves = curve_axes(ax, frame, metric, x, **kwargs)
        if zoom:
            zoom_axes(zax, curves, metric, x, ax.get_xlabel())
        size = paper.PRESETS[preset].font if preset is not None else 12.0  # "large" of 10 pt
        # fontsize=None would not mean the default: matplotlib then skips figure.titlesize
        sized = {"fontsize": size} if preset is not None else {}
        fig.suptitle(_wrap(title, fig.get_figwidth(), size), **sized)
        spread = "min–max" if metric.endswith("_loss") else "±1 std (min–max with 2 seeds)"
        small = paper.PRESETS[preset].small if preset is not None else 8.5
        heading = f"solid: mean over seeds, band {spread}"
        if preset is not None and note:
            heading += "\n" + _wrap(note, fig.get_figwidth(), small)
        elif note:
            caption(fig, note)
        _legend(
            fig,
            ax,
            heading,
            any(c.lower is None for c in curves),
            fontsize=small,
        )
    return fig


def _wrap(text: str, width_in: float, points: float) -> str:
    """Each line of ``text`` wrapped to what fits ``width_in`` inches at ``points`` (a character
    is a little over half its point size wide)."""
    import textwrap

    fits = max(20, int(width_in * 72 / (0.55 * points)))
    return "\n".join("\n".join(textwrap.wrap(line, fits) or [""]) for line in text.split("\n"))


def _legend(
    fig: plt.Figure, ax: plt.Axes, title: str, published: bool, fontsize: float = 8.5
) -> None:
    """One entry per optimizer (its seeds and lost runs); one for all published curves."""
    handles = [h for h in ax.get_lines() if h.get_linestyle() != "--"]
    labels = [h.get_label() for h in handles]
    if published:
        handles.append(Line2D([], [], color="0.3", lw=1.2, ls="--"))
        labels.append("published (1 run each)")
    # as many columns as fit the figure's width (8.5 pt text: ~4.2 pt a character, ~40 pt of
    # line sample and padding per entry); the rest wraps into rows
    entry = 4.2 * fontsize / 8.5 * max(len(lbl) for lbl in labels) + 40
    fit = round(fig.get_figwidth() * 72 / entry)  # the estimate errs wide: rounding is safe
    ncol = max(1, min(fit, len(handles)))
    # taller for every row of entries beyond two, so the axes keep their height
    fig.set_figheight(fig.get_figheight() + 0.17 * max(0, -(-len(handles) // ncol) - 2))
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=ncol,
        fontsize=fontsize,
        frameon=False,
        title=title,
        title_fontsize=fontsize,
    )


def caption(fig: plt.Figure, text: str) -> None:
    """A small grey line under everything: where the numbers come from (commit, machine)."""
    if text:
        fig.text(0.01, 0.002, text, fontsize=7, color="0.4", ha="left", va="bottom")


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    """``stem``.png (150 dpi: 1,500 px wide) and ``stem``.pdf (vector, TrueType fonts, for
    print); closes it."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150)
    # a fixed date keeps the PDF bytes equal between regenerations of the same data; TrueType
    # (Type 42) fonts, not Type 3, which publishers and arXiv refuse
    with plt.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
        fig.savefig(paths[1], metadata={"CreationDate": None})
    plt.close(fig)
    return paths
