"""The files one analysis writes to an output folder: the table in every format, every run, and the plots.

`write_report` writes `ablation.md`, `ablation.tex` and `ablation.csv` (the table, whatever format was printed,
so a paper, a notebook and a README each find theirs), `runs.csv` (one row per run, failed ones included, every
results.json key; `python -m analysis runs.csv` reads it back), `top1_vs_gmacs.png` and, when the table has a
baseline, `delta_vs_baseline.png`, and when rows also have the paper's numbers, `delta_vs_paper.png`. The markdown and LaTeX
files end with the runs left out of the averages (with the reason, the diverged step and the signal).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from analysis.plots import plot_delta_vs_baseline, plot_delta_vs_paper, plot_top1_vs_gmacs
from analysis.table import render, render_excluded

TABLE_FILES = {"markdown": "ablation.md", "latex": "ablation.tex", "csv": "ablation.csv"}


def write_report(runs: pd.DataFrame, table: pd.DataFrame, out: str | os.PathLike) -> list[Path]:
    """Write the table files, runs.csv and the PNG plots into folder `out`; return the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt, name in TABLE_FILES.items():
        text = render(table, fmt)
        if fmt != "csv" and (excluded := render_excluded(runs, fmt)):
            text = f"{text.rstrip()}\n\n{excluded}"
        (out / name).write_text(text.rstrip() + "\n")
        written.append(out / name)
    runs.to_csv(out / "runs.csv", index=False)
    written.append(out / "runs.csv")
    written.append(plot_top1_vs_gmacs(table, out / "top1_vs_gmacs.png"))
    if (table["delta_vs_baseline"].notna() & ~table["is_baseline"]).any():
        written.append(plot_delta_vs_baseline(table, out / "delta_vs_baseline.png"))
    if (table["paper_delta"].notna() & table["delta_vs_baseline"].notna() & ~table["is_baseline"]).any():
        written.append(plot_delta_vs_paper(table, out / "delta_vs_paper.png"))
    return written
