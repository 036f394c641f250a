"""Plots of an ablation table, written as PNG files with matplotlib's Agg renderer (no screen needed).

`plot_top1_vs_gmacs` places each configuration at its cost and accuracy, the trade-off the PoolFormer paper
argues about; `plot_delta_vs_baseline` shows each row's difference to the baseline. Both take the table from
`ablation_table` and draw only rows with at least one completed run; error bars are the seed standard deviation
(none for n = 1). Figures are built with `matplotlib.figure.Figure`, not pyplot, so no global state or GUI
backend is involved.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.collect import AnalysisError
from analysis.table import varies


def _names(table: pd.DataFrame) -> pd.Series:
    names = table["label"].astype(str)
    for column in ("data", "model"):
        if varies(table, column):
            names = names + " (" + table[column].fillna("?").astype(str) + ")"
    return names


def plot_top1_vs_gmacs(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a top-1 vs MACs scatter, one labelled point per configuration, to `path`; return the path."""
    rows = table.assign(name=_names(table))
    rows = rows[(rows["n"] > 0) & rows["gmacs"].notna()]
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.add_subplot()
    groups = rows["group"].fillna("")
    for group, sub in rows.groupby(groups, sort=False):
        ax.errorbar(
            sub["gmacs"], sub["top1_mean"], yerr=sub["top1_std"], fmt="o", capsize=3, label=group or None
        )
    for row in rows.itertuples():
        ax.annotate(
            row.name, (row.gmacs, row.top1_mean), xytext=(4, 4), textcoords="offset points", fontsize=8
        )
    if rows.empty:
        ax.text(0.5, 0.5, "no completed run with MACs", ha="center", va="center", transform=ax.transAxes)
    if groups.ne("").any():
        ax.legend(title="group", fontsize=8)
    ax.margins(x=0.2, y=0.1)  # room for the labels
    ax.set_xlabel("MACs (G)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("top-1 vs MACs (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_delta_vs_baseline(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write horizontal bars of each row's top-1 difference to the baseline (std error bars) to `path`."""
    rows = table.assign(name=_names(table))
    rows = rows[rows["delta_vs_baseline"].notna()]
    if rows.empty:
        raise AnalysisError(
            "no row has a difference to a baseline; give a baseline label present in the table"
        )
    baseline = ", ".join(rows.loc[rows["is_baseline"], "name"]) or "baseline"
    fig = Figure(figsize=(7, 1.2 + 0.35 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    deltas = rows["delta_vs_baseline"]
    colors = ["tab:green" if d >= 0 else "tab:red" for d in deltas]
    colors = ["tab:gray" if b else c for b, c in zip(rows["is_baseline"], colors, strict=True)]
    y = range(len(rows))
    ax.barh(y, deltas, xerr=rows["top1_std"], color=colors, capsize=3)
    ax.set_yticks(list(y), rows["name"].tolist(), fontsize=8)
    ax.invert_yaxis()  # the table's first row on top
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"top-1 difference to {baseline} (points)")
    ax.set_title("Δ top-1 vs baseline (error bars: std over seeds)")
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=120)
    return Path(path)
