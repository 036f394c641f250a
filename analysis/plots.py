"""Plots of an ablation table, written as PNG files with matplotlib's Agg renderer (no screen needed).

- `plot_delta_vs_baseline`: each row's Δ to its baseline with its adjusted interval (the one the outcome is read
  off), in table order, coloured by outcome (better, worse, equivalent, undecided), the ±margin band shaded. A row far off the others' scale (a collapse at chance) would squeeze every other row into a few
  pixels, so the axis is clipped to the rest and such rows are drawn at the edge with their value written out.
- `plot_delta_vs_paper`: our Δ against the paper's Δ, one numbered point per row with a paper number, our CI as
  the error bar, the y = x line (reproduced) and the zero lines; both axes symmetric-log (linear within ±1 point)
  so a -70 point collapse and a 0.3 point nuance both stay readable.
- `plot_top1_vs_gmacs`: top-1 against cost, numbered points with their 95% CI bars in the point's colour, the
  axis fitted to the bars unless they are far wider than the spread of the means (then a clipped bar ends in an
  arrow at the frame), a collapsed row drawn at the bottom edge with its value instead of stretching the axis.
Points carry numbers placed where they overlap nothing, and a key beside the plot names them: full labels of
twenty rows at three MAC values cannot be placed without overlap. Figures are built with
`matplotlib.figure.Figure`, not pyplot, so no global state or GUI backend is involved.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter
from matplotlib.transforms import Bbox

from analysis.collect import AnalysisError
from analysis.table import varies

OUTCOME_COLORS = {
    "better": "tab:green",
    "worse": "tab:red",
    "equivalent": "tab:blue",
    "undecided": "tab:gray",
}
VERDICT_COLORS = {
    "agrees": "tab:green",
    "opposite": "tab:red",
    "not resolved": "tab:gray",
    "paper: no change": "tab:orange",
    "paper: change": "tab:purple",
    "paper: within margin": "tab:cyan",
}
KEY_LINE_PT = 11  # the key's line height, in points
# A row is off scale when its extent is this many times the largest extent of the rows that stay on scale.
OFF_SCALE_RATIO = 4.0


def _names(table: pd.DataFrame) -> pd.Series:
    names = table["label"].astype(str)
    for column in ("data", "model"):
        if varies(table, column):
            names = names + " (" + table[column].fillna("?").astype(str) + ")"
    return names


def _title(text: str, table: pd.DataFrame) -> str:
    shared = " ".join(table.attrs.get("shared_overrides", []))
    return f"{text}\nevery run: {shared}" if shared else text


def on_scale(extent: np.ndarray, ratio: float = OFF_SCALE_RATIO) -> np.ndarray:
    """Return which rows stay on a shared scale: all, unless at most a third of them lie `ratio` times beyond
    the rest (the largest such gap decides), so one collapsed row does not set the axis for twenty others."""
    extent = np.asarray(extent, dtype=float)
    finite = np.sort(extent[np.isfinite(extent)])
    keep = np.ones(len(extent), dtype=bool)
    best, cut = ratio, None
    for k in range(1, max(len(finite) // 3, 1) + 1):  # k rows above the cut
        if len(finite) <= k:
            break
        below, above = finite[-k - 1], finite[-k]
        if below > 0 and above / below >= best:
            best, cut = above / below, below
    if cut is not None:
        keep = ~(extent > cut)
    return keep


def _place_labels(ax: Axes, points: list[tuple[float, float]], texts: list[str], colors: list[str]) -> None:
    """Write each text next to its point (data coordinates) where it overlaps no point and no earlier text."""
    fig = ax.figure
    fig.draw_without_rendering()  # final layout first: positions below are in display pixels
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    marker = 4.0
    taken = [Bbox.from_bounds(x - marker, y - marker, 2 * marker, 2 * marker) for x, y in map(to_px, points)]
    frame = ax.get_window_extent(renderer)
    directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    for (x, y), text, color in zip(points, texts, colors, strict=True):
        label = ax.annotate(
            text,
            (x, y),
            xytext=(0, 0),
            textcoords="offset points",
            fontsize=7,
            color=color,
            ha="center",
            va="center",
            annotation_clip=False,
            bbox={"boxstyle": "square,pad=0.05", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
        label.set_in_layout(False)
        best, best_overlap = None, math.inf
        for radius in (7, 11, 16, 22, 30):
            for dx, dy in directions:
                label.set_position((dx * radius, dy * radius))
                box = label.get_window_extent(renderer).padded(1)
                overlap = sum(box.overlaps(t) for t in taken) + (
                    0 if frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1) else 1
                )
                if overlap < best_overlap:
                    best, best_overlap = (dx * radius, dy * radius), overlap
                if overlap == 0:
                    break
            if best_overlap == 0:
                break
        label.set_position(best)
        if abs(best[0]) > 7 or abs(best[1]) > 7:  # away from its point: a leader line says whose it is
            ax.annotate(
                "",
                (x, y),
                xytext=best,
                textcoords="offset points",
                arrowprops={"arrowstyle": "-", "color": color, "lw": 0.5, "alpha": 0.6, "shrinkB": 2},
            ).set_in_layout(False)
        taken.append(label.get_window_extent(renderer).padded(1))


def _key(ax: Axes, numbers: list[int], names: list[str], colors: list[str], title: str) -> None:
    """Write the numbers' names as a column of text from the top of `ax` (an axes kept for it, axis off), one
    line every KEY_LINE_PT points, so the key takes the room its lines need."""
    ax.set_axis_off()
    ax.set_title(title, fontsize=8, loc="left")
    for i, (number, name, color) in enumerate(zip(numbers, names, colors, strict=True)):
        ax.annotate(f"{number:>2}  {name}", (0, 1), xycoords="axes fraction", xytext=(0, -KEY_LINE_PT * (i + 0.5)),
                    textcoords="offset points", fontsize=7, color=color, va="center", family="monospace",
                    annotation_clip=False)  # fmt: skip


def _figure(rows: int, with_key: bool, names: list[str] | None = None) -> tuple[Figure, Axes, Axes | None]:
    """A figure with the plot and, when `with_key`, a key column as wide as its longest line (7 pt monospace)."""
    height = max(4.5, KEY_LINE_PT * rows / 72 + 1.6) if with_key else 4.5
    if not with_key:
        fig = Figure(figsize=(7, height), layout="constrained")
        FigureCanvasAgg(fig)
        return fig, fig.add_subplot(), None
    longest = max((len(n) for n in names or []), default=10) + 4
    key_width = min(max(0.06 * longest, 1.4), 4.5)  # inches: about 0.06 in per 7 pt monospace character
    fig = Figure(figsize=(6.5 + key_width, height), layout="constrained")
    FigureCanvasAgg(fig)
    ax, key = fig.subplots(1, 2, width_ratios=[6.5, key_width])
    return fig, ax, key


def plot_top1_vs_gmacs(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write top-1 vs MACs, one numbered point per configuration (95% CI bars) and a key, to `path`."""
    rows = table.assign(name=_names(table))
    rows = rows[(rows["n"] > 0) & rows["gmacs"].notna()].reset_index(drop=True)
    off = ~on_scale(np.abs(rows["top1_mean"] - rows["top1_mean"].median()).to_numpy(dtype=float))
    longest = [f"{n} (00.0, off scale)" if o else n for n, o in zip(rows["name"], off, strict=True)]
    fig, ax, key = _figure(len(rows), with_key=not rows.empty, names=longest)
    if rows.empty:
        ax.text(0.5, 0.5, "no completed run with MACs", ha="center", va="center", transform=ax.transAxes)
    else:
        mean = rows["top1_mean"].to_numpy(dtype=float)
        low = rows["top1_ci_low"].fillna(rows["top1_mean"]).to_numpy(dtype=float)
        high = rows["top1_ci_high"].fillna(rows["top1_mean"]).to_numpy(dtype=float)
        keep = on_scale(np.abs(mean - np.median(mean)))
        groups = rows["group"].fillna("").astype(str)
        cycle = [f"C{i}" for i in range(10)]
        color_of = {g: cycle[i % 10] for i, g in enumerate(dict.fromkeys(groups))}
        colors = [color_of[g] for g in groups]
        inside = rows[keep]
        # The axis takes the bars in, unless they are far wider than the spread of the means (two or three seeds
        # give wide intervals): then it follows the means and a clipped bar ends in an arrow at the frame.
        bottom, top = mean[keep].min(), mean[keep].max()
        pad = 0.12 * max(top - bottom, 0.5)
        reach_low, reach_high = low[keep].min(), high[keep].max()
        if (reach_high - reach_low) <= 3 * max(top - bottom + 2 * pad, 0.5):
            bottom, top = min(bottom, reach_low), max(top, reach_high)
            pad = 0.06 * max(top - bottom, 0.5)
        edge = bottom - 2 * pad
        y_low, y_high = (edge - pad if (~keep).any() else bottom - pad), top + pad
        for i in np.flatnonzero(keep):
            lo, hi = max(low[i], y_low), min(high[i], y_high)
            ax.plot([rows["gmacs"][i]] * 2, [lo, hi], color=colors[i], alpha=0.55, linewidth=1.2, zorder=2)
            for end, clipped, marker in ((lo, low[i] < y_low, "v"), (hi, high[i] > y_high, "^")):
                ax.plot([rows["gmacs"][i]], [end], marker=marker if clipped else "_", color=colors[i], alpha=0.7,
                        markersize=6 if clipped else 7, zorder=2, clip_on=False)  # fmt: skip
        ax.scatter(
            inside["gmacs"], mean[keep], c=[c for c, k in zip(colors, keep, strict=True) if k], s=18, zorder=3
        )
        ax.set_ylim(y_low, y_high)
        for i in np.flatnonzero(~keep):  # off scale: a marker at the edge, the value written out
            ax.scatter([rows["gmacs"][i]], [edge], marker="v", c=[colors[i]], s=30, zorder=3)
            ax.annotate(f"{mean[i]:.2f}% (off scale)", (rows["gmacs"][i], edge), xytext=(0, -8),
                        textcoords="offset points", fontsize=7, color=colors[i], ha="center",
                        va="top").set_in_layout(False)  # fmt: skip
        ax.margins(x=0.15)
        points = [(g, m if k else edge) for g, m, k in zip(rows["gmacs"], mean, keep, strict=True)]
        numbers = list(range(1, len(rows) + 1))
        _place_labels(ax, points, [str(n) for n in numbers], colors)
        names = [
            f"{name} ({m:.1f}, off scale)" if not k else name
            for name, m, k in zip(rows["name"], mean, keep, strict=True)
        ]
        _key(key, numbers, names, colors, "rows (colour: group)" if groups.ne("").any() else "rows")
    ax.set_xlabel("MACs (G)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(
        _title(
            "top-1 vs MACs (mean over seeds; bars: 95% CI, an arrow where one is cut at the frame)", table
        ),
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_delta_vs_baseline(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write each row's Δ to the baseline with its 95% CI (clipped axis for far-off rows) to `path`."""
    rows = table.assign(name=_names(table))
    rows = rows[rows["delta_vs_baseline"].notna() & ~rows["is_baseline"]].reset_index(drop=True)
    if rows.empty:
        raise AnalysisError(
            "no row has a difference to a baseline; give a baseline label present in the table"
        )
    baseline = ", ".join(_names(table)[table["is_baseline"]]) or "baseline"
    delta = rows["delta_vs_baseline"].to_numpy(dtype=float)
    low = rows["delta_ci_low"].fillna(rows["delta_vs_baseline"]).to_numpy(dtype=float)
    high = rows["delta_ci_high"].fillna(rows["delta_vs_baseline"]).to_numpy(dtype=float)
    keep = on_scale(np.maximum(np.abs(low), np.abs(high)))
    margin = float(table.attrs.get("margin", 0.0))
    limit = 1.08 * max(np.abs(low[keep]).max(), np.abs(high[keep]).max(), margin, 0.1)
    fig = Figure(figsize=(8, 1.6 + 0.3 * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    colors = [OUTCOME_COLORS.get(o, OUTCOME_COLORS["undecided"]) for o in rows["outcome"]]
    if margin > 0:
        ax.axvspan(-margin, margin, color=OUTCOME_COLORS["equivalent"], alpha=0.1, linewidth=0)
    for i in range(len(rows)):
        if keep[i]:
            ax.errorbar(delta[i], y[i], xerr=[[delta[i] - low[i]], [high[i] - delta[i]]], fmt="o",
                        color=colors[i], ms=4, capsize=2, elinewidth=1)  # fmt: skip
            if np.isnan(rows["delta_ci_low"][i]):
                ax.annotate(f"no CI ({rows['test'][i] or 'no test'})".replace("(none (n=1))", "(n=1)"), (delta[i], y[i]), xytext=(6, 0),
                            textcoords="offset points", fontsize=7, va="center", color=colors[i])  # fmt: skip
        else:
            side = np.sign(delta[i])
            ax.plot(side * limit * 0.97, y[i], marker=">" if side > 0 else "<", color=colors[i], ms=7)
            ci = "" if np.isnan(rows["delta_ci_low"][i]) else f" [{low[i]:+.2f}, {high[i]:+.2f}]"
            ax.annotate(f"{delta[i]:+.2f}{ci} (off scale)", (side * limit * 0.97, y[i]),
                        xytext=(-8 * side, 0), textcoords="offset points", ha="right" if side > 0 else "left",
                        va="center", fontsize=7, color=colors[i])  # fmt: skip
    ax.set_xlim(-limit, limit)
    ax.set_yticks(list(y), rows["name"].tolist(), fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the table's first row on top
    groups = rows["group"].fillna("").astype(str).tolist()
    starts = [i for i in range(len(groups)) if i == 0 or groups[i] != groups[i - 1]]
    for start, end in zip(starts, [*starts[1:], len(groups)], strict=True):
        if start:
            ax.axhline(start - 0.5, color="0.8", linewidth=0.8)
        ax.text(1.01, (start + end - 1) / 2, groups[start], transform=ax.get_yaxis_transform(), fontsize=7,
                style="italic", color="0.3", va="center")  # fmt: skip
    ax.axvline(0, color="black", linewidth=0.8)
    level = table.attrs.get("level")
    level_text = table.attrs.get("interval") or (
        f"{100 * level:.2f}% CI (Bonferroni-adjusted)" if level else "adjusted CI"
    )
    # wrapped: a long baseline label (a search's candidate) would run off the figure
    ax.set_xlabel(textwrap.fill(f"top-1 difference to {baseline} (points), {level_text}", 70))
    legend = [ax.scatter([], [], color=c, label=o) for o, c in OUTCOME_COLORS.items()]
    if margin > 0:
        from matplotlib.patches import Patch

        legend.append(
            Patch(color=OUTCOME_COLORS["equivalent"], alpha=0.1, label=f"±{margin:g} (equivalence margin)")
        )
    alpha = table.attrs.get("alpha", 0.05)
    fig.legend(handles=legend, fontsize=7, loc="outside lower center", ncols=len(legend),
               title=f"outcome (family-wise error {alpha:.0%})", title_fontsize=7)  # fmt: skip
    ax.set_title(_title("Δ top-1 vs baseline", table), fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_decisions(
    decisions: pd.DataFrame,
    path: str | os.PathLike,
    names: Mapping[str, str] | None = None,
    groups: Mapping[str, str] | None = None,
    shared: Sequence[str] = (),
) -> Path:
    """Write a sequential study's decisions (`analysis.sequential.decide`'s frame) as the Δ plot: each row's Δ
    with the interval its decision used (not the fixed-sample CI that `plot_delta_vs_baseline` draws from runs),
    the outcome colours and the ±margin band; each row named with its paired seeds (and "futile" where it stopped
    so). `names`/`groups`: a row's label and group (its runs' results.json), rows ordered by group; `shared`: the
    overrides every run has, for the title."""
    names, groups = names or {}, groups or {}
    design = decisions.attrs["design"]
    table = pd.DataFrame(
        {
            "label": [
                f"{names.get(x, x)} (n={n}{', futile' if why == 'futile' else ''})"
                for x, n, why in zip(decisions["label"], decisions["n"], decisions["reason"], strict=True)
            ],
            "is_baseline": decisions["is_baseline"].astype(bool),
            "delta_vs_baseline": pd.to_numeric(decisions["delta"], errors="coerce"),
            "delta_ci_low": pd.to_numeric(decisions["low"], errors="coerce"),
            "delta_ci_high": pd.to_numeric(decisions["high"], errors="coerce"),
            "outcome": decisions["outcome"],
            "group": [groups.get(x, "") for x in decisions["label"]],
            "test": [f"none (n={n})" if n < 2 else "paired t" for n in decisions["n"]],
        }
    )
    order = list(dict.fromkeys(table["group"]))
    table = table.sort_values("group", key=lambda g: g.map(order.index), kind="stable").reset_index(drop=True)
    table.attrs.update(
        margin=design.margin,
        alpha=design.alpha,
        shared_overrides=list(shared),
        interval="each row's interval at the look that stopped it (group-sequential, Bonferroni over rows and "
        "looks)",
    )
    return plot_delta_vs_baseline(table, path)


def plot_delta_vs_paper(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write our Δ against the paper's Δ (numbered points, 95% CI bars, y = x and zero lines, a key) to `path`."""
    rows = table.assign(name=_names(table))
    rows = rows[rows["paper_delta"].notna() & rows["delta_vs_baseline"].notna() & ~rows["is_baseline"]]
    rows = rows.reset_index(drop=True)
    if rows.empty:
        raise AnalysisError(
            "no row has both a Δ of ours and a paper Δ; the table needs paper_top1 and a baseline"
        )
    names = [f"{n} ({v})" for n, v in zip(rows["name"], rows["verdict"], strict=True)]
    fig, ax, key = _figure(len(rows), with_key=True, names=names)
    ours = rows["delta_vs_baseline"].to_numpy(dtype=float)
    paper = rows["paper_delta"].to_numpy(dtype=float)
    low = rows["delta_ci_low"].fillna(rows["delta_vs_baseline"]).to_numpy(dtype=float)
    high = rows["delta_ci_high"].fillna(rows["delta_vs_baseline"]).to_numpy(dtype=float)
    colors = [VERDICT_COLORS.get(v, "tab:gray") for v in rows["verdict"]]
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.errorbar(
        paper, ours, yerr=[ours - low, high - ours], fmt="none", ecolor="0.6", elinewidth=0.8, capsize=2
    )
    ax.scatter(paper, ours, c=colors, s=18, zorder=3)
    reach = 1.3 * max(np.abs(np.concatenate([paper, low, high])).max(), 2.0)
    ax.set_xlim(-reach, reach)
    ax.set_ylim(-reach, reach)
    ax.plot([-reach, reach], [-reach, reach], color="0.5", linestyle="--", linewidth=0.8, label="y = x")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_aspect("equal")
    # symlog's own ticks are only the decades (±1, ±10); 2 and 5 too while they fit
    steps = [0.5, 1, 2, 5, 10, 20] if reach <= 12 else [0.5, 1, 10, 100, 1000]
    ticks = [0.0] + [sign * t for t in steps if t <= reach for sign in (-1, 1)]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(FixedLocator(sorted(ticks)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    numbers = list(range(1, len(rows) + 1))
    _place_labels(ax, list(zip(paper, ours, strict=True)), [str(n) for n in numbers], colors)
    _key(key, numbers, names, colors, "rows (colour: verdict)")
    ax.set_xlabel("paper Δ top-1 (points, symlog: linear within ±1)")
    ax.set_ylabel("our Δ top-1 with adjusted CI (points, symlog)")
    ax.legend(fontsize=7, loc="best")  # where it hides no point or interval
    ax.set_title(_title("our Δ vs the paper's Δ, each to its baseline", table), fontsize=9)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)
    return Path(path)
