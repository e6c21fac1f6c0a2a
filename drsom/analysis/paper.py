"""Paper-ready output: figure presets at print size with embedded TrueType fonts, and booktabs
LaTeX tables.

A figure made inside ``with paper.style("column"):`` is 3.3 in wide (one column of a two-column
paper), ``"full"`` 6.75 in (the text width), with font sizes that read at that size. Fonts are
embedded as TrueType (``pdf.fonttype = 42``; matplotlib writes a Type0 font with a CIDFontType2,
i.e. TrueType, descendant), never Type 3 (glyphs as drawing procedures, which publishers' PDF
checks flag).
matplotlib reads ``pdf.fonttype`` when the file is *written*: save inside the ``with`` block, or
with :func:`save`, which sets it itself. The page size is the figure size (``savefig.bbox``
"standard", not "tight", which would crop the width to the drawing).

Tables: ``latex_table`` writes ``\\toprule`` / ``\\midrule`` / ``\\bottomrule`` (``\\usepackage
{booktabs}``). An interval column shows the mean and the interval as ``96.00 [95.00, 97.00]``,
not ``mean ± half-width``: a bootstrap interval is not symmetric, and the bounds are what a reader
checks against another row.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")  # files only

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

TRUETYPE = {"pdf.fonttype": 42, "ps.fonttype": 42}  # 42: TrueType; 3 (matplotlib's default): Type 3


class Preset(NamedTuple):
    width: float  # inches
    height: float  # inches
    font: float  # points: labels and text
    small: float  # points: ticks and legend


PRESETS = {
    "column": Preset(3.3, 2.4, 8.0, 7.0),
    "full": Preset(6.75, 2.8, 9.0, 8.0),
}


def rc(preset: str) -> dict:
    """The rcParams of a preset (for ``plt.rc_context``; :func:`style` applies them)."""
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}: accepted are {', '.join(PRESETS)}")
    p = PRESETS[preset]
    return TRUETYPE | {
        "figure.figsize": (p.width, p.height),
        "figure.constrained_layout.use": True,  # labels inside the page, at the fixed width
        "savefig.bbox": "standard",
        "font.size": p.font,
        "axes.titlesize": p.font,
        "axes.labelsize": p.font,
        "xtick.labelsize": p.small,
        "ytick.labelsize": p.small,
        "legend.fontsize": p.small,
        "lines.linewidth": 1.2,
        "axes.linewidth": 0.6,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }


@contextlib.contextmanager
def style(preset: str) -> Iterator[None]:
    """``with style("column"): fig, ax = plt.subplots(); ...; fig.savefig("f.pdf")``."""
    with plt.rc_context(rc(preset)):
        yield


def save(fig: plt.Figure, path: Path) -> Path:
    """``path`` (PDF or any format matplotlib writes) with TrueType fonts and no creation date
    (the same bytes for the same figure); closes the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(TRUETYPE | {"savefig.bbox": "standard"}):
        fig.savefig(path, metadata={"CreationDate": None} if path.suffix == ".pdf" else None)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------- LaTeX
class Column(NamedTuple):
    """A table column: ``key`` a column of the frame, or the stem of ``<key>_mean``,
    ``<key>_low``, ``<key>_high`` (an interval cell); numbers times ``scale`` (100: fractions
    shown as percent), with ``digits`` decimals."""

    key: str
    header: str
    scale: float = 1.0
    digits: int = 2


LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def escape(text: str) -> str:
    """Plain text for LaTeX: ``_ % & # $ { } ~ ^ \\`` as LaTeX prints them."""
    return "".join(LATEX_SPECIAL.get(c, c) for c in str(text))


def latex_table(
    frame: pd.DataFrame, columns: Sequence[Column | str], caption: str, label: str
) -> str:
    """A ``table`` float with a booktabs ``tabular``: one line per row of ``frame``. Text cells
    are escaped, so are the caption and headers (``label`` is not: ``\\ref`` takes it as it is).
    Numbers are right-aligned, text left; NaN is ``--``; an interval without bounds (one seed)
    is the mean alone."""
    cols = [c if isinstance(c, Column) else Column(c, c) for c in columns]
    for c in cols:
        if c.key not in frame and f"{c.key}_mean" not in frame:
            raise ValueError(f"latex_table: column {c.key!r} is not in the frame")
    cells = [[_cell(r, c) for c in cols] for _, r in frame.iterrows()]
    align = "".join("l" if _is_text(frame, c) else "r" for c in cols)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{escape(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(escape(c.header) for c in cols) + r" \\",
        r"\midrule",
        *(" & ".join(row) + r" \\" for row in cells),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _is_text(frame: pd.DataFrame, c: Column) -> bool:
    return c.key in frame and not pd.api.types.is_numeric_dtype(frame[c.key])


def _cell(row: pd.Series, c: Column) -> str:
    if c.key in row.index:
        value = row[c.key]
        if isinstance(value, str) or not _is_number(value):
            return escape(value)
        return _number(value, c)
    mean, low, high = (row[f"{c.key}_{p}"] for p in ("mean", "low", "high"))
    if not _is_number(mean) or math.isnan(mean):
        return "--"
    if not (_is_number(low) and _is_number(high)) or math.isnan(low) or math.isnan(high):
        return _number(mean, c)
    return f"{_number(mean, c)} [{_number(low, c)}, {_number(high, c)}]"


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _number(value: float, c: Column) -> str:
    if isinstance(value, numbers.Integral) and c.scale == 1:
        return str(int(value))  # a count: "3", not "3.00"
    return "--" if math.isnan(value) else f"{value * c.scale:.{c.digits}f}"
