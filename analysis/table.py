"""Ablation tables: runs grouped into configurations across seeds, tested against a baseline, rendered.

`ablation_table` turns the runs DataFrame from `collect_runs` into one row per configuration: a configuration
is its `label` (or its overrides without the seed) on one `data` and `model`, so the same label trained on two
data sets gives two rows. Only runs with status "completed" and a finite top-1 enter the statistics; the others
stay in the runs DataFrame and `render_excluded` lists them with the reason, and a configuration whose runs all
failed keeps its row with n = 0.

Per row: n, mean top-1 and its 95% CI; against the baseline of the same data and model, Δ with its 95% CI and
the test that gave it (paired by seed, else Welch), the p-value Holm-corrected over the rows tested and whether
it is resolved at 5%; where the row has a paper number, the paper's Δ to its baseline and a verdict; for rows
not resolved, an estimate of the seeds that would resolve the observed Δ. `analysis.stats` holds the statistics.
The table stays numeric; `render` formats it as markdown, LaTeX, CSV or HTML, with the overrides every run
shares in a header line, the methods in a note and a summary paragraph generated from the numbers.

Row order: per data set and model (first seen), the baseline row first, then the ablation groups in the order
their first run was found (folders in natural order: job 2 before job 10), rows within a group likewise. That is
the order of the sweep, which is the order the person who wrote the sweep chose.

The baseline: the row given by `baseline` (a label, or an ablation config name such as "pool_size_5"); by default
the row labelled "baseline", else "default" (the run with no overrides), else none, and then no deltas at all:
guessing a reference row would print differences to something nobody chose.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

from analysis.collect import AnalysisError, shared_overrides
from analysis.stats import (
    ALPHA,
    BOOTSTRAP_MIN_N,
    DEFAULT_MARGIN,
    MAX_SEEDS,
    OUTCOMES,
    POWER,
    bonferroni,
    compare,
    mean_interval,
    outcome,
    seeds_needed,
    seeds_needed_equivalence,
    verdict,
)

FORMATS = ("markdown", "latex", "csv", "html")
DEFAULT_BASELINES = ("baseline", "default")
TEXT_COLUMNS = ("label", "data", "model", "group", "test", "outcome", "verdict")
EXCLUDED_COLUMNS = [
    "label",
    "seed",
    "status",
    "reason",
    "diverged_epoch",
    "diverged_batch",
    "diverged_step",
    "signal",
    "epochs_logged",
    "folder",
]


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


def _statistics(table: pd.DataFrame, top1: list[pd.Series], margin: float, alpha: float) -> pd.DataFrame:
    """Add the intervals, the tests against each row's baseline, the outcomes, the verdict and the seeds needed.

    `top1[i]` holds row i's completed runs' top-1, indexed by seed.
    """
    intervals = [mean_interval(runs.to_numpy()) for runs in top1]
    table["top1_ci_low"] = [i.low for i in intervals]
    table["top1_ci_high"] = [i.high for i in intervals]
    table["top1_ci_method"] = [i.method if n else None for i, n in zip(intervals, table["n"], strict=True)]

    family = _first_seen(table, ["data", "model"])  # each data set and model has its own baseline
    base_of = {f: i for i, (f, b) in enumerate(zip(family, table["is_baseline"], strict=True)) if b}
    comparisons = []
    for i, (f, is_base) in enumerate(zip(family, table["is_baseline"], strict=True)):
        base = base_of.get(f)
        if is_base or base is None or top1[i].empty or top1[base].empty:
            comparisons.append(None)
        else:
            comparisons.append(compare(top1[i], top1[base]))
    # Bonferroni over the rows tested: each row's interval at 1 - alpha/m, so all hold together at 1 - alpha.
    tests = sum(1 for c in comparisons if c is not None and c.tested)
    level = 1 - alpha / max(tests, 1)
    table["delta_vs_baseline"] = [
        c.delta if c else (0.0 if b and n else math.nan)
        for c, b, n in zip(comparisons, table["is_baseline"], table["n"], strict=True)
    ]
    bounds = [c.interval(level) if c else (math.nan, math.nan) for c in comparisons]
    table["delta_ci_low"] = [b[0] for b in bounds]
    table["delta_ci_high"] = [b[1] for b in bounds]
    table["test"] = [c.test if c else None for c in comparisons]
    table["n_pairs"] = [c.n_pairs if c else 0 for c in comparisons]
    table["p_value"] = [c.p if c and c.tested else math.nan for c in comparisons]
    table["p_adj"] = bonferroni(table["p_value"].to_numpy(), tests)
    table["p_equivalence"] = [c.p_equivalence(margin) if c else math.nan for c in comparisons]
    # Inside ±margin at level 1 - alpha/m means each one-sided test at alpha/(2m): the adjusted TOST p is 2 m p.
    table["p_equivalence_adj"] = bonferroni(table["p_equivalence"].to_numpy(), 2 * tests)
    table["outcome"] = [
        None if c is None else outcome(lo, hi, margin)
        for c, (lo, hi) in zip(comparisons, bounds, strict=True)
    ]
    table["within_margin"] = [bool(math.isfinite(lo) and -margin < lo and hi < margin) for lo, hi in bounds]

    paper_base = table["paper_top1"].where(table["is_baseline"]).groupby(family).transform("first")
    table["paper_delta"] = (table["paper_top1"] - paper_base).where(~table["is_baseline"])
    table["verdict"] = [
        verdict(o, d, p, margin) if o is not None and math.isfinite(d) else None
        for o, d, p in zip(table["outcome"], table["delta_vs_baseline"], table["paper_delta"], strict=True)
    ]
    # The estimate is at the level every row is decided at: alpha / (rows tested); the fewer of the seeds that
    # would show a difference and those that would show equivalence.
    table["seeds_needed"] = [
        math.nan
        if c is None or o != "undecided" or not c.tested
        else min(
            seeds_needed(c.delta, c.sd, None if c.paired else c.sd_base, alpha=1 - level),
            seeds_needed_equivalence(c.delta, c.sd, margin, None if c.paired else c.sd_base, alpha=1 - level),
        )
        for c, o in zip(comparisons, table["outcome"], strict=True)
    ]
    table.attrs.update(margin=margin, alpha=alpha, tests=tests, level=level)
    return table


def ablation_table(
    runs: pd.DataFrame, baseline: str | None = None, margin: float = DEFAULT_MARGIN, alpha: float = ALPHA
) -> pd.DataFrame:
    """Return one row per configuration: n, top-1 with 95% CI, Δ to baseline with its adjusted CI, test, adjusted
    p-values, outcome (better / worse / equivalent within ±margin / undecided), verdict against the paper, cost.

    `margin` is in points of top-1 (>= 0; 0: no row can be equivalent); `alpha` the family-wise error over the
    rows tested. `table.attrs` holds `shared_overrides` (the overrides every run shares, left out of the row
    labels), `margin`, `alpha`, `tests` (rows tested), `level` (each interval's confidence) and `duplicates`
    (the repeated runs of one seed left out: label, seed, folder, kept folder).
    """
    if not (math.isfinite(margin) and margin >= 0):
        raise AnalysisError(f"margin {margin:g} must be 0 or more (points of top-1); e.g. --margin 0.5")
    if not 0 < alpha < 1:
        raise AnalysisError(f"alpha {alpha:g} must lie between 0 and 1")
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
    # Iterating the groups follows the same first-seen order as the aggregated rows.
    top1 = [g.dropna(subset=["_top1"]).set_index("_seed")["_top1"] for _, g in grouped[["_seed", "_top1"]]]
    table = table.reset_index().rename(columns={"config": "label"})
    table["is_baseline"] = _baseline_mask(table, baseline)
    table = _statistics(table, top1, margin, alpha)
    decided_at = dict(table.attrs)

    is_baseline = table["is_baseline"]
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
        "top1_ci_low",
        "top1_ci_high",
        "top1_ci_method",
        "delta_vs_baseline",
        "delta_ci_low",
        "delta_ci_high",
        "test",
        "n_pairs",
        "p_value",
        "p_adj",
        "p_equivalence",
        "p_equivalence_adj",
        "outcome",
        "within_margin",
        "paper_top1",
        "paper_delta",
        "verdict",
        "seeds_needed",
    ]
    table = table[columns + [c for c in table.columns if c not in columns]]
    table.attrs = {
        **decided_at,
        "shared_overrides": shared_overrides(runs["overrides"]),
        "duplicates": _duplicates(runs),
    }
    return table


def _duplicates(runs: pd.DataFrame) -> list[dict]:
    if "duplicate_of" not in runs.columns:
        return []
    dropped = runs[runs["duplicate_of"].notna()]
    return [
        {"label": label, "seed": seed, "folder": folder, "kept": kept}
        for label, seed, folder, kept in zip(
            dropped["config"], dropped["seed"], dropped["folder"], dropped["duplicate_of"], strict=True
        )
    ]


def varies(table: pd.DataFrame, column: str) -> bool:
    """Return whether `column` holds more than one distinct non-empty value (data and model are shown only then)."""
    return column in table and table[column].dropna().astype(str).nunique() > 1


def _number(value: float, digits: int, dash: str, sign: bool = False) -> str:
    if pd.isna(value):
        return dash
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _with_ci(value: float, low: float, high: float, sign: bool, dash: str) -> str:
    text = _number(value, 2, dash, sign)
    if pd.isna(value) or pd.isna(low):
        return text
    return f"{text} [{_number(low, 2, dash, sign)}, {_number(high, 2, dash, sign)}]"


def _p(value: float, dash: str) -> str:
    if pd.isna(value):
        return dash
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _significant(value: float, dash: str, digits: int = 3) -> str:
    """`value` to `digits` significant digits (0.00505, 0.0202, 1.80, 12.3), whole numbers from 10**digits on."""
    if pd.isna(value):
        return dash
    if value == 0 or abs(value) >= 10**digits:
        return f"{value:.0f}"
    return f"{value:#.{digits}g}"


def _outcome_text(decided: str | None, within: bool, margin: float, dash: str) -> str:
    if decided is None or pd.isna(decided):
        return dash
    if decided == "equivalent":
        return f"equivalent (±{margin:g})"
    if decided in ("better", "worse") and within:
        return f"{decided} (within ±{margin:g})"
    return decided


def _seeds_text(value: float, dash: str) -> str:
    if pd.isna(value):
        return dash
    return f">{MAX_SEEDS}" if math.isinf(value) else f"≈{int(value)}"


def _display(table: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """The table as strings, with the columns a reader wants; missing values a dash, n=1 says it has no CI."""
    latex = fmt == "latex"
    dash = "--" if latex else "–"
    text = _latex_escape if latex else str
    out = pd.DataFrame({"label": table["label"].map(text)})
    for column in ("data", "model"):
        if varies(table, column):
            out[column] = table[column].fillna("").astype(str).map(text)
    if table["group"].notna().any():
        out["group"] = table["group"].fillna("").astype(str).map(text)
    out["n"] = table["n"].astype(int).astype(str)
    out["top-1 [95% CI]"] = [
        _with_ci(m, lo, hi, False, dash) + (" (n=1: no CI)" if n == 1 else "")
        for m, lo, hi, n in zip(
            table["top1_mean"], table["top1_ci_low"], table["top1_ci_high"], table["n"], strict=True
        )
    ]
    if table["is_baseline"].any():
        margin = table.attrs.get("margin", DEFAULT_MARGIN)
        out["Δ [adj. CI]"] = [
            "(baseline)"
            if b and not pd.isna(d)
            else _with_ci(d, lo, hi, True, dash) + (" (no CI)" if not pd.isna(d) and pd.isna(lo) else "")
            for b, d, lo, hi in zip(
                table["is_baseline"],
                table["delta_vs_baseline"],
                table["delta_ci_low"],
                table["delta_ci_high"],
                strict=True,
            )
        ]
        out["test"] = [
            dash if pd.isna(t) else (f"{t} ({k})" if k else t)
            for t, k in zip(table["test"], table["n_pairs"], strict=True)
        ]
        out["p (adj.)"] = table["p_adj"].map(lambda v: _p(v, dash))
        out["p equiv. (adj.)"] = table["p_equivalence_adj"].map(lambda v: _p(v, dash))
        out["outcome"] = [
            _outcome_text(o, w, margin, dash)
            for o, w in zip(table["outcome"], table["within_margin"], strict=True)
        ]
        if table["paper_delta"].notna().any():
            out["paper Δ"] = table["paper_delta"].map(
                lambda v: "0.0" if abs(v) < 0.05 else _number(v, 1, dash, sign=True)
            )
            out["verdict"] = table["verdict"].fillna(dash)
        out["seeds to decide (est.)"] = table["seeds_needed"].map(lambda v: _seeds_text(v, dash))
    elif table["paper_top1"].notna().any():
        out["paper top-1"] = table["paper_top1"].map(lambda v: _number(v, 1, dash))
    out["params (M)"] = table["params_m"].map(lambda v: _number(v, 1, dash))
    out["MACs (G)"] = table["gmacs"].map(lambda v: _significant(v, dash))
    out["img/s"] = table["img_per_s"].map(lambda v: _number(v, 0, dash))
    if latex:
        out.columns = [c.replace("Δ", "$\\Delta$").replace("%", "\\%") for c in out.columns]
        out = out.map(lambda v: v.replace("≈", "$\\approx$").replace("<", "$<$").replace(">", "$>$"))
    return out


def _latex_escape(text: str) -> str:
    for char in "\\&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text.replace("~", "\\textasciitilde{}").replace("^", "\\textasciicircum{}")


def _listing(rows: pd.DataFrame, with_delta: bool = True) -> str:
    items = [
        f"{label} ({delta:+.2f})" if with_delta else str(label)
        for label, delta in zip(rows["label"], rows["delta_vs_baseline"], strict=True)
    ]
    return ", ".join(items)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _against_paper(rows: pd.DataFrame) -> str:
    return ", ".join(
        f"{label}: {delta:+.2f} where the paper has {paper:+.1f}"
        for label, delta, paper in zip(
            rows["label"], rows["delta_vs_baseline"], rows["paper_delta"], strict=True
        )
    )


def notes(table: pd.DataFrame) -> str:
    """Return what the columns mean: the CI method, the tests, the adjustment, the outcomes, the verdict, the
    estimate, and the repeated runs of one seed that were left out."""
    parts = [
        f"top-1: mean over seeds with its 95% CI (t-interval below {BOOTSTRAP_MIN_N} seeds, BCa bootstrap from "
        f"{BOOTSTRAP_MIN_N} on; none for one seed)."
    ]
    if table["is_baseline"].any():
        tests = int(table.attrs.get("tests", table["p_value"].notna().sum()))
        alpha = table.attrs.get("alpha", ALPHA)
        margin = table.attrs.get("margin", DEFAULT_MARGIN)
        level = table.attrs.get("level", 1 - alpha / max(tests, 1))
        parts.append(
            "Δ: top-1 minus the baseline's (same data and model; over the paired seeds when paired); test: paired "
            "t-test over the seeds both rows ran (their count in brackets; same seed = same initialisation and "
            "data order), Welch's t-test when they share fewer than two; none when a row has one run, or when "
            "every paired difference is the same (no spread to test against). "
            f"adj. CI: Bonferroni-adjusted, each row's t-interval at {_percent(level)} = 1 - {alpha:g}/"
            f"{max(tests, 1)} ({_count(tests, 'row')} tested), so all hold together with {1 - alpha:.0%} "
            "confidence. outcome, read off that interval: better (above 0), worse (below 0), "
            f"equivalent (inside ±{margin:g} points: two one-sided tests), undecided (none of these); a better "
            f"or worse row whose interval also lies inside ±{margin:g} says so. The chance that any claim in the "
            f"table (a difference, its sign, an equivalence) is wrong is at most {alpha:g}. "
            f"p (adj.): two-sided p of Δ = 0 times {max(tests, 1)} (capped at 1), below {alpha:g} exactly when "
            f"the interval excludes 0; p equiv. (adj.): the larger one-sided p of |Δ| >= {margin:g} times "
            f"{2 * max(tests, 1)}, below {alpha:g} exactly when the interval lies inside ±{margin:g}."
        )
        if table["paper_delta"].notna().any():
            parts.append(
                "paper Δ: the paper's top-1 difference to its baseline; verdict: agrees / opposite (better or "
                "worse, with the paper's sign / the other sign; equivalent where the paper's Δ is 0.0 agrees), "
                "paper: no change (better or worse where the paper's Δ is 0.0), paper: change (equivalent where "
                f"the paper's Δ is ±{margin:g} or more), paper: within margin (equivalent, the paper's Δ smaller "
                "than the margin), not resolved (undecided)."
            )
        parts.append(
            f"seeds to decide: an estimate, not a measurement: seeds per row that would give {POWER:.0%} power to "
            f"reach an outcome (a difference or equivalence, whichever needs fewer) at the same level, taking the "
            "observed Δ and spread as the truth."
        )
    if duplicates := table.attrs.get("duplicates"):
        shown = "; ".join(
            f"{d['label']} seed {_seed_text(d['seed'])}: {d['folder']} left out, {d['kept']} kept"
            for d in duplicates[:10]
        )
        more = f"; and {len(duplicates) - 10} more" if len(duplicates) > 10 else ""
        parts.append(
            f"{_count(len(duplicates), 'repeated run')} left out: one run per (configuration, seed) counts, as "
            "a rerun of a seed repeats its initialisation and data order; kept: the newest (results.json "
            f"modification time; without one, the last in folder order): {shown}{more}."
        )
    return " ".join(parts)


def _percent(level: float) -> str:
    text = f"{100 * level:.3f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _seed_text(seed: float) -> str:
    return str(int(seed)) if float(seed).is_integer() else str(seed)


def summary(table: pd.DataFrame) -> str:
    """Return one paragraph, generated from the numbers: the outcomes, what agrees with the paper, what not."""
    if not table["is_baseline"].any():
        return f"{len(table)} configurations; no baseline row, so no comparison (pass --baseline LABEL)."
    rows = table[~table["is_baseline"]]
    tested = rows[rows["p_value"].notna()]
    if tested.empty:
        return (
            "No row could be tested against the baseline: a test needs at least two completed runs in both rows "
            "(and a baseline on the same data and model)."
        )
    margin = table.attrs.get("margin", DEFAULT_MARGIN)
    alpha = table.attrs.get("alpha", ALPHA)
    pieces = []
    for kind in OUTCOMES:
        chosen = tested[tested["outcome"].eq(kind)]
        if kind == "undecided":
            pieces.append(f"{len(chosen)} undecided")
        else:
            name = f"equivalent within ±{margin:g}" if kind == "equivalent" else kind
            pieces.append(f"{len(chosen)} {name}" + (f" ({_listing(chosen)})" if len(chosen) else ""))
    sentences = [
        f"Of {_count(len(tested), 'row')} tested against the baseline (family-wise error {alpha:.0%}, "
        f"Bonferroni): {', '.join(pieces[:-1])} and {pieces[-1]}."
    ]
    untested = rows[rows["p_value"].isna()]
    if len(untested):
        sentences.append(
            f"{_count(len(untested), 'row')} could not be tested (one run or none, or the same difference on every seed): "
            f"{_listing(untested, with_delta=False)}."
        )
    with_paper = rows[rows["verdict"].notna()]
    if len(with_paper):
        verdicts = with_paper["verdict"].value_counts()
        agree = with_paper[with_paper["verdict"].eq("agrees")]
        opposite = with_paper[with_paper["verdict"].eq("opposite")]
        unresolved = verdicts.get("not resolved", 0)
        sentence = (
            f"Of the {_count(len(with_paper), 'row')} with a paper number, {len(agree)} "
            f"{'agrees' if len(agree) == 1 else 'agree'} with the paper"
            + (f" ({_listing(agree, with_delta=False)})" if len(agree) else "")
            + f", {len(opposite)} {'is' if len(opposite) == 1 else 'are'} opposite"
            + (f" ({_against_paper(opposite)})" if len(opposite) else "")
            + f" and {unresolved} {'is' if unresolved == 1 else 'are'} not resolved"
        )
        if changed := verdicts.get("paper: no change", 0):
            sentence += f"; {_count(changed, 'row')} {'differs' if changed == 1 else 'differ'} where the paper saw no change"
        if contradicted := verdicts.get("paper: change", 0):
            sentence += (
                f"; {_count(contradicted, 'row')} {'is' if contradicted == 1 else 'are'} equivalent where the paper "
                f"reported a change of {margin:g} or more"
            )
        if small := verdicts.get("paper: within margin", 0):
            sentence += f"; {_count(small, 'row')} equivalent where the paper's change is within the margin"
        sentences.append(sentence + ".")
    needed = rows.loc[rows["p_value"].notna() & rows["outcome"].eq("undecided"), "seeds_needed"]
    if len(needed):
        finite = needed[np.isfinite(needed)]
        estimate = (
            f"a median of about {int(finite.median())} seeds per row (estimate)"
            if len(finite)
            else f"more than {MAX_SEEDS} seeds per row"
        )
        beyond = int(np.isinf(needed).sum())
        sentences.append(
            f"At the noise observed, deciding the {_count(len(needed), 'undecided row')} would take {estimate}"
            + (f"; {beyond} would need more than {MAX_SEEDS}" if beyond and len(finite) else "")
            + "."
        )
    return " ".join(sentences)


def render(table: pd.DataFrame, fmt: str = "markdown") -> str:
    """Return the ablation table as markdown, LaTeX (booktabs), CSV (numbers unformatted) or HTML text.

    Markdown and HTML carry the shared overrides above the table and the notes and summary below it; LaTeX
    carries them as comments; CSV is the table alone.
    """
    if fmt not in FORMATS:
        raise AnalysisError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return table.to_csv(index=False, float_format="%.6g")
    shown = _display(table, fmt)
    shared = " ".join(table.attrs.get("shared_overrides", []))
    below = [notes(table), summary(table)]
    if fmt == "html":
        head = f"<p>Every run: <code>{html.escape(shared)}</code></p>\n" if shared else ""
        return head + shown.to_html(index=False) + "".join(f"\n<p>{html.escape(p)}</p>" for p in below)
    align = ["left" if c in TEXT_COLUMNS else "right" for c in shown.columns]
    if fmt == "markdown":
        head = f"Every run: `{shared}`\n\n" if shared else ""
        body = shown.to_markdown(index=False, disable_numparse=True, colalign=align)
        return head + body + "".join(f"\n\n{p}" for p in below)
    head = f"% every run: {shared}\n" if shared else ""
    body = shown.to_latex(index=False, escape=False, column_format="".join(a[0] for a in align))
    return head + body + "".join(f"% {p}\n" for p in below)


def excluded_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Return the runs left out of the averages and why: status, reason (results.json's error, else what analysis
    found), the diverged step (epoch, batch, step) and the signal that stopped the run, where there are ones."""
    excluded = (
        runs.loc[~runs["usable"].astype(bool)].drop(columns="label").rename(columns={"config": "label"})
    )
    excluded = excluded.reindex(columns=sorted(set(EXCLUDED_COLUMNS) | {"error", "problem"}))
    excluded["reason"] = excluded["error"].where(excluded["error"].notna(), excluded["problem"])
    for column in ("diverged_epoch", "diverged_batch", "diverged_step", "epochs_logged", "seed"):
        excluded[column] = pd.to_numeric(excluded[column], errors="coerce").astype("Int64")
    return excluded[EXCLUDED_COLUMNS].reset_index(drop=True)


EXCLUDED_TITLE = "Runs not in the averages ({}): failed, diverged, preempted, incomplete or without a top-1"


def render_excluded(runs: pd.DataFrame, fmt: str = "markdown") -> str:
    """Return the list of runs left out of the averages ('' if none): markdown, LaTeX comments, CSV or HTML.

    CSV has every column of `excluded_runs` under a `# ` title line; the others show the status, the reason, the
    diverged step and the signal where any run has them.
    """
    excluded = excluded_runs(runs)
    if excluded.empty:
        return ""
    title = EXCLUDED_TITLE.format(len(excluded))
    if fmt == "csv":
        return f"# {title}\n" + excluded.to_csv(index=False)
    shown = pd.DataFrame(
        {
            "label": excluded["label"],
            "seed": excluded["seed"],
            "status": excluded["status"],
            "reason": excluded["reason"].map(lambda r: r if pd.isna(r) or len(r) <= 160 else r[:159] + "…"),
            "diverged at (epoch, batch)": [
                None if pd.isna(e) else f"epoch {e}, batch {b}"
                for e, b in zip(excluded["diverged_epoch"], excluded["diverged_batch"], strict=True)
            ],
            "signal": excluded["signal"],
            "epochs logged": excluded["epochs_logged"],
            "folder": excluded["folder"],
        }
    )
    shown = shown.dropna(axis=1, how="all").astype(object).fillna("").astype(str)
    if fmt == "html":
        return f"<p><b>{html.escape(title)}</b></p>\n" + shown.to_html(index=False)
    if fmt == "markdown":
        return f"**{title}**\n\n" + shown.to_markdown(index=False, disable_numparse=True)
    plain = shown.to_markdown(index=False, tablefmt="plain", disable_numparse=True)
    return "\n".join("% " + line for line in [title, *plain.splitlines()])
