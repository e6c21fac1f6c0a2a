"""Paper-ready output (drsom.analysis.paper): TrueType PDFs at the presets' widths, booktabs
LaTeX tables; and the suite's own figure PDFs."""

from __future__ import annotations

import math
import re

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from drsom.analysis import paper


# ------------------------------------------------------------------------------- paper
def _pdf_facts(path) -> tuple[list[bytes], list[float]]:
    data = path.read_bytes()
    subtypes = re.findall(rb"/Subtype\s*/(\w+)", data)
    box = re.search(rb"/MediaBox\s*\[\s*([\d.\s]+)\]", data).group(1).split()
    return subtypes, [float(v) for v in box]


def _figure():
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [90.0, 93.0, 95.5], label="DRSOM")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    return fig


@pytest.mark.parametrize("preset, width", [("column", 3.3), ("full", 6.75)])
def test_paper_figures_embed_truetype_at_the_presets_width(tmp_path, preset, width):
    with paper.style(preset):
        fig = _figure()
        path = paper.save(fig, tmp_path / f"{preset}.pdf")
    subtypes, box = _pdf_facts(path)
    assert b"Type3" not in subtypes
    assert b"CIDFontType2" in subtypes or b"TrueType" in subtypes  # TrueType outlines
    assert box[2] - box[0] == pytest.approx(width * 72)  # 237.6 pt for the column


def test_save_embeds_truetype_even_outside_the_style_block(tmp_path):
    with paper.style("column"):
        fig = _figure()
    subtypes, _ = _pdf_facts(paper.save(fig, tmp_path / "late.pdf"))
    assert b"Type3" not in subtypes
    # the check sees Type 3 where matplotlib's default writes it
    fig = _figure()
    with plt.rc_context({"pdf.fonttype": 3}):
        fig.savefig(tmp_path / "default.pdf")
    plt.close(fig)
    assert b"Type3" in _pdf_facts(tmp_path / "default.pdf")[0]


def test_an_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="preset='poster': accepted are column, full"):
        paper.rc("poster")


def test_latex_table_is_booktabs_with_escaped_text_and_interval_cells():
    frame = pd.DataFrame(
        {
            "optimizer": ["drsom_hvp", "SGD & momentum"],
            "seeds": [3, 1],
            "acc_mean": [0.96, 0.92],
            "acc_low": [0.95, math.nan],
            "acc_high": [0.97, math.nan],
        }
    )
    columns = [
        "optimizer",
        paper.Column("seeds", "seeds"),
        paper.Column("acc", "test acc (%)", scale=100),
    ]
    text = paper.latex_table(frame, columns, "Accuracy, 95% CI over seeds", "tab:acc_cifar")
    assert text == (
        "\\begin{table}[t]\n"
        "\\centering\n"
        "\\caption{Accuracy, 95\\% CI over seeds}\n"
        "\\label{tab:acc_cifar}\n"
        "\\begin{tabular}{lrr}\n"
        "\\toprule\n"
        "optimizer & seeds & test acc (\\%) \\\\\n"
        "\\midrule\n"
        "drsom\\_hvp & 3 & 96.00 [95.00, 97.00] \\\\\n"
        "SGD \\& momentum & 1 & 92.00 \\\\\n"
        "\\bottomrule\n"
        "\\end{tabular}\n"
        "\\end{table}\n"
    )


def test_latex_table_refuses_a_column_the_frame_lacks():
    with pytest.raises(ValueError, match="column 'loss' is not in the frame"):
        paper.latex_table(pd.DataFrame({"a": [1]}), ["loss"], "c", "tab:x")


# ------------------------------------------------------------------ in the tables and figures


def test_the_suites_figures_embed_truetype(tmp_path):
    from drsom.analysis import figures

    (pdf,) = [p for p in figures.save(_figure(), tmp_path / "curve") if p.suffix == ".pdf"]
    subtypes, _ = _pdf_facts(pdf)
    assert b"Type3" not in subtypes and subtypes
