"""Ablation tables: runs grouped into configurations across seeds, compared to a baseline, rendered.

`ablation_table` turns the runs DataFrame from `collect_runs` into one row per configuration: a configuration
is its `label` (or its overrides without the seed) on one `data` and `model`, so the same label trained on two
data sets gives two rows. Only runs with status "completed" and a finite top-1 enter the statistics; the others
stay in the runs DataFrame and `render_excluded` lists them, and a configuration whose runs all failed keeps its
row with n = 0. The table stays numeric; `render` formats it as markdown, LaTeX or CSV.

Row order: per data set and model (first seen), the baseline row first, then the ablation groups in the order
their first run was found (folders in natural order: job 2 before job 10), rows within a group likewise. That is
the order of the sweep, which is the order the person who wrote the sweep chose.

The baseline: the row given by `baseline` (a label, or an ablation config name such as "pool_size_5"); by default
the row labelled "baseline", else "default" (the run with no overrides), else none, and then no deltas at all:
guessing a reference row would print differences to something nobody chose.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.collect import AnalysisError

FORMATS = ("markdown", "latex", "csv")
DEFAULT_BASELINES = ("baseline", "default")
TEXT_COLUMNS = ("label", "data", "model", "group")
EXCLUDED_COLUMNS = ["status", "config", "seed", "epochs_logged", "folder", "problem"]


def _first_seen(table: pd.DataFrame, columns: list[str]) -> np.ndarray:
    return table.groupby(columns, dropna=False, sort=False).ngroup().to_numpy()


def _seeds(seeds: pd.Series) -> str:
    return ",".join(str(int(s)) if float(s).is_integer() else str(s) for s in seeds.dropna())


def _baseline_mask(table: pd.DataFrame, baseline: str | None) -> pd.Series:
    if baseline is None:
        for candidate in DEFAULT_BASELINES:
            if table["label"].eq(candidate).any():
                return table["label"].eq(candidate)
        return pd.Series(False, index=table.index)
    for column in ("label", "ablation"):
        if table[column].eq(baseline).any():
            return table[column].eq(baseline)
    labels = ", ".join(repr(label) for label in table["label"].drop_duplicates())
    raise AnalysisError(
        f"baseline {baseline!r} is neither a row label nor an ablation name; labels: {labels}"
    )


def ablation_table(runs: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """Return one row per configuration: n, top-1 mean/std over completed seeds, delta to baseline, cost."""
    runs = runs.reset_index(drop=True)
    ok = runs["usable"].astype(bool)
    work = runs.assign(
        _top1=runs["top1"].where(ok),
        _top5=runs["top5"].where(ok),
        _best=runs["best_top1"].where(ok),
        _img_s=runs["train_img_per_s"].where(ok),
        _seed=runs["seed"].where(ok),
        _excluded=~ok,
    )
    grouped = work.groupby(["config", "data", "model"], dropna=False, sort=False)
    table = grouped.agg(
        group=("group", "first"),
        ablation=("ablation", "first"),
        n=("_top1", "count"),
        top1_mean=("_top1", "mean"),
        top1_std=("_top1", "std"),
        top5_mean=("_top5", "mean"),
        best_top1_mean=("_best", "mean"),
        paper_top1=("paper_top1", "first"),
        params_m=("params_m", "mean"),
        gmacs=("gmacs", "mean"),
        img_per_s=("_img_s", "mean"),
        n_excluded=("_excluded", "sum"),
    )
    table["seeds"] = grouped["_seed"].agg(_seeds)
    table = table.reset_index().rename(columns={"config": "label"})

    is_baseline = _baseline_mask(table, baseline)
    base = table["top1_mean"].where(is_baseline).groupby([table["data"], table["model"]], dropna=False)
    table["delta_vs_baseline"] = table["top1_mean"] - base.transform("first")
    table["is_baseline"] = is_baseline

    order = np.lexsort(  # the last key sorts first
        (
            np.arange(len(table)),
            _first_seen(table, ["group"]),
            ~is_baseline.to_numpy(),
            _first_seen(table, ["data", "model"]),
        )
    )
    table = table.iloc[order].reset_index(drop=True)
    columns = [
        "label",
        "data",
        "model",
        "group",
        "ablation",
        "n",
        "top1_mean",
        "top1_std",
        "delta_vs_baseline",
    ]
    return table[columns + [c for c in table.columns if c not in columns]]


def varies(table: pd.DataFrame, column: str) -> bool:
    """Return whether `column` holds more than one distinct non-empty value (data and model are shown only then)."""
    return table[column].dropna().astype(str).nunique() > 1


def _number(value: float, digits: int, dash: str, sign: bool = False) -> str:
    if pd.isna(value):
        return dash
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _display(table: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """The table as strings, with the columns a reader wants: n=1 shows the mean alone, missing values a dash."""
    latex = fmt == "latex"
    dash, pm = ("--", " $\\pm$ ") if latex else ("–", " ± ")
    text = _latex_escape if latex else str
    out = pd.DataFrame({"label": table["label"].map(text)})
    for column in ("data", "model"):
        if varies(table, column):
            out[column] = table[column].fillna("").astype(str).map(text)
    if table["group"].notna().any():
        out["group"] = table["group"].fillna("").astype(str).map(text)
    out["n"] = table["n"].astype(int).astype(str)
    out[f"top-1 (mean{pm}std)"] = [
        _number(m, 2, dash) + ("" if pd.isna(s) else pm + f"{s:.2f}")
        for m, s in zip(table["top1_mean"], table["top1_std"], strict=True)
    ]
    if table["is_baseline"].any():
        out["$\\Delta$ vs baseline" if latex else "Δ vs baseline"] = [
            "(baseline)" if b and not pd.isna(d) else _number(d, 2, dash, sign=True)
            for b, d in zip(table["is_baseline"], table["delta_vs_baseline"], strict=True)
        ]
    if table["paper_top1"].notna().any():
        out["paper top-1"] = table["paper_top1"].map(lambda v: _number(v, 1, dash))
    out["params (M)"] = table["params_m"].map(lambda v: _number(v, 1, dash))
    out["MACs (G)"] = table["gmacs"].map(lambda v: _number(v, 2, dash))
    out["img/s"] = table["img_per_s"].map(lambda v: _number(v, 0, dash))
    return out


def _latex_escape(text: str) -> str:
    for char in "\\&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text.replace("~", "\\textasciitilde{}").replace("^", "\\textasciicircum{}")


def render(table: pd.DataFrame, fmt: str = "markdown") -> str:
    """Return the ablation table as markdown, LaTeX (booktabs) or CSV (numbers unformatted) text."""
    if fmt not in FORMATS:
        raise AnalysisError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return table.to_csv(index=False, float_format="%.6g")
    shown = _display(table, fmt)
    align = ["left" if c in TEXT_COLUMNS else "right" for c in shown.columns]
    if fmt == "markdown":
        return shown.to_markdown(index=False, disable_numparse=True, colalign=align)
    return shown.to_latex(index=False, escape=False, column_format="".join(a[0] for a in align))


def excluded_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Return the runs left out of the averages (failed, diverged, incomplete, no top-1) and why."""
    excluded = runs.loc[~runs["usable"].astype(bool), EXCLUDED_COLUMNS]
    return excluded.rename(columns={"config": "label"}).reset_index(drop=True)


def render_excluded(runs: pd.DataFrame, fmt: str = "markdown") -> str:
    """Return the list of runs left out of the averages, as markdown, LaTeX comments or plain text; '' if none."""
    excluded = excluded_runs(runs)
    if excluded.empty:
        return ""
    excluded["seed"] = excluded["seed"].map(lambda s: "" if pd.isna(s) else _seeds(pd.Series([s])))
    excluded["epochs_logged"] = excluded["epochs_logged"].map(lambda e: "" if pd.isna(e) else str(int(e)))
    excluded = excluded.fillna("").astype(str)
    title = f"Runs not in the averages ({len(excluded)}): failed, diverged, incomplete or without a top-1"
    if fmt == "markdown":
        return f"**{title}**\n\n" + excluded.to_markdown(index=False, disable_numparse=True)
    plain = excluded.to_markdown(index=False, tablefmt="plain", disable_numparse=True)
    if fmt == "latex":
        return "\n".join("% " + line for line in [title, *plain.splitlines()])
    return f"{title}\n{plain}"
