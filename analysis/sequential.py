"""A sequential decision rule for an adaptive ablation study: after each round of seeds, which rows are decided
(better / worse / equivalent within ±margin, as in the table) and which need more seeds, valid under repeated looks.

The design: a group-sequential test per row, every row paired by seed with the baseline, with at most `max_looks`
looks on a schedule fixed in advance (look k uses the first `first + (k - 1) * step` shared seeds, in ascending
seed order). The family-wise error `alpha` is split twice by Bonferroni: over the m rows (alpha / m each) and, per
row, over its looks by a spending rule (`pocock`: equal shares, alpha / (m K) per look; `obf`: the O'Brien-Fleming-
like Lan-DeMets spending 2 - 2 Phi(z / sqrt(k / K)), little early and most at the last look). At look k a row's
two-sided t-interval of Δ at level 1 - alpha_k decides it exactly as `analysis.stats.outcome` does in the table:
better (above 0), worse (below 0), equivalent (inside ±margin: TOST at alpha_k / 2 per side), else undecided. A
decided row stops. So whatever the rows' correlation (they share the baseline) and whichever look each row stops
at, the chance that any claim of the study is wrong is at most the sum of the levels, alpha. A row can also stop
for futility: when the chance that it is decided by the last look (conditional power, taking the observed Δ and
spread as the truth) is below `futility`; futility stops claim nothing, so they do not add to the error (they are
non-binding: a study may ignore them) and only save runs. Rows whose interval is undecided at the last look end
undecided.

Why not `adastop` (PyPI, AdaStop: sequential permutation tests with family-wise error control over several
comparisons, which was read for this choice): its test permutes runs between two agents, so it cannot pair them
by seed (the pairing is what cancels the shared noise here: paired spreads are 0.1-0.8 points where the unpaired
ones are larger), its "equal" decision means "no difference found" (or futility), not equivalence within a margin,
it needs the same number of new runs per agent at every interim, and with 3 to 5 seeds a look the permutation
p-values are too coarse (C(6, 3) = 20 permutations) for alpha / 22 rows. It would also add a dependency (click,
tabulate). Bonferroni over rows and looks is conservative (the looks of one row are positively correlated, exact
group-sequential boundaries would be less strict), but it is valid under any dependence and any stopping, and it
keeps the decision one interval that a reader can check.

Public API (the adaptive sweeper calls `decide` after each round with every run so far, then `next_seeds`):

    design = Design(margin=0.5, alpha=0.05, max_looks=3, first=3, step=1)
    decisions = decide(runs, baseline="baseline", design=design, look=k)   # one row per configuration
    todo = next_seeds(decisions)   # label -> the seed ids to run next (the baseline included); {}: none yet

`replay` runs the rule on a recorded study (seeds taken in ascending order), `simulate` (analysis.simulate)
measures its error and power on numbers drawn with known effects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.collect import AnalysisError
from analysis.stats import ALPHA, DEFAULT_MARGIN, OUTCOMES

SPENDING = ("pocock", "obf")
# Outcome codes of the vectorised core; OUTCOMES[code] is the word.
BETTER, WORSE, EQUIVALENT, UNDECIDED = range(4)
REASONS = ("running", "decided", "futile", "last look")


@dataclass(frozen=True)
class Design:
    """A sequential design: margin (points), family-wise alpha, looks, seeds per look, spending, futility.

    Look k (1-based) uses `first + (k - 1) * step` paired seeds; the last look's count is the per-row `cap`.
    `rows`: the number of comparisons alpha is split over, fixed in advance (None: the rows in the data).
    `futility`: stop a row when its conditional power to be decided by the last look is below this (0: never).
    """

    margin: float = DEFAULT_MARGIN
    alpha: float = ALPHA
    max_looks: int = 4
    first: int = 2
    step: int = 1
    spending: str = "obf"
    futility: float = 0.1
    rows: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise AnalysisError(
                f"margin {self.margin:g} must be 0 or more (points of top-1); e.g. --margin 0.5"
            )
        if not 0 < self.alpha < 1:
            raise AnalysisError(f"alpha {self.alpha:g} must lie between 0 and 1")
        if self.max_looks < 1 or self.first < 2 or self.step < 1:
            raise AnalysisError(
                f"a design needs max_looks >= 1, first >= 2 seeds and step >= 1 (got {self.max_looks}, "
                f"{self.first}, {self.step})"
            )
        if self.spending not in SPENDING:
            raise AnalysisError(f"spending {self.spending!r}: choose one of {', '.join(SPENDING)}")
        if not 0 <= self.futility < 1:
            raise AnalysisError(f"futility {self.futility:g} must lie in [0, 1)")

    @property
    def cap(self) -> int:
        """The paired seeds a row has at the last look: the most any row gets."""
        return self.seeds_at(self.max_looks)

    def seeds_at(self, look: int) -> int:
        """The paired seeds look `look` (1-based) uses."""
        return self.first + (min(look, self.max_looks) - 1) * self.step

    def levels(self, rows: int) -> np.ndarray:
        """The two-sided level of each look's interval for one of `rows` rows; they sum to alpha / rows."""
        share = self.alpha / max(rows, 1)
        k = self.max_looks
        if self.spending == "pocock":
            return np.full(k, share / k)
        z = stats.norm.isf(share / 2)
        spent = 2 * stats.norm.sf(z / np.sqrt(np.arange(1, k + 1) / k))
        return np.diff(np.concatenate([[0.0], spent]))


def _conditional_power(
    n: np.ndarray, mean: np.ndarray, sd: np.ndarray, cap: int, last_level: float, margin: float
) -> np.ndarray:
    """The chance that a row with `n` pairs (mean, sd) is decided at the last look (cap pairs), taking the
    observed mean and sd as the truth: 1 - P(the final mean falls where the final interval decides nothing)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        half = stats.t.isf(last_level / 2, cap - 1) * sd / math.sqrt(cap)  # the final interval's half-width
        spread = sd * np.sqrt(np.maximum(cap - n, 0)) / cap  # the final mean's spread given the data so far
        inner = margin - half  # |final mean| below this: equivalent
        cdf = stats.norm.cdf

        def mass(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:  # P(lo <= final mean <= hi), lo <= hi
            z_hi = np.where(spread > 0, (hi - mean) / spread, np.where(mean <= hi, np.inf, -np.inf))
            z_lo = np.where(spread > 0, (lo - mean) / spread, np.where(mean < lo, np.inf, -np.inf))
            return np.clip(cdf(z_hi) - cdf(z_lo), 0.0, 1.0)

        # Undecided at the end: |final mean| <= half and not |final mean| < inner.
        both_sides = mass(np.maximum(inner, 0.0), half) + mass(-half, -np.maximum(inner, 0.0))
        undecided = np.where(inner >= half, 0.0, np.where(inner > 0, both_sides, mass(-half, half)))
    return np.where(np.isfinite(undecided), 1.0 - undecided, 1.0)


@dataclass
class Looks:
    """What the looks decided, arrays of shape (studies, rows): outcome code, the look it stopped at (0: still
    running), why (REASONS index), pairs used, Δ, the interval and its level at the last look taken, and the
    conditional power there."""

    outcome: np.ndarray
    stop_look: np.ndarray
    reason: np.ndarray
    n: np.ndarray
    delta: np.ndarray
    low: np.ndarray
    high: np.ndarray
    level: np.ndarray
    power: np.ndarray


def run_looks(diffs: np.ndarray, design: Design, look: int, rows: int | None = None) -> Looks:
    """Apply looks 1..`look` of `design` to paired differences `diffs` (studies, rows, seeds; seeds in the order
    they are taken, NaN where a pair is missing). Look k sees only the first `design.seeds_at(k)` seed columns
    (and of those the pairs present), so a decision never uses seeds a later round added. A row stops at the first
    look that decides it, or that finds it futile, or at the last look; a stopped row keeps that look's result."""
    diffs = np.asarray(diffs, dtype=float)
    if diffs.ndim != 3:
        raise ValueError("diffs must have shape (studies, rows, seeds)")
    shape = diffs.shape[:2]
    rows = rows or design.rows or shape[1]
    levels = design.levels(rows)
    out = Looks(
        outcome=np.full(shape, UNDECIDED),
        stop_look=np.zeros(shape, dtype=int),
        reason=np.zeros(shape, dtype=int),
        n=np.zeros(shape, dtype=int),
        delta=np.full(shape, np.nan),
        low=np.full(shape, np.nan),
        high=np.full(shape, np.nan),
        level=np.full(shape, np.nan),
        power=np.full(shape, np.nan),
    )
    running = np.ones(shape, dtype=bool)
    for k in range(1, min(look, design.max_looks) + 1):
        seen = diffs[..., : design.seeds_at(k)]
        present = ~np.isnan(seen)
        n = present.sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            total = np.where(present, seen, 0.0).sum(-1)
            mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
            squares = np.where(present, (seen - mean[..., None]) ** 2, 0.0).sum(-1)
            sd = np.sqrt(np.where(n > 1, squares / np.maximum(n - 1, 1), np.nan))
            se = sd / np.sqrt(n)
            half = stats.t.isf(levels[k - 1] / 2, np.maximum(n - 1, 1)) * se
        tested = (n >= 2) & (sd > 1e-9)  # as in the table: equal differences on every seed give no test
        low, high = np.where(tested, mean - half, np.nan), np.where(tested, mean + half, np.nan)
        code = np.full(shape, UNDECIDED)
        code[tested & (low > 0)] = BETTER
        code[tested & (high < 0)] = WORSE
        inside = tested & (low > -design.margin) & (high < design.margin) & (code == UNDECIDED)
        code[inside] = EQUIVALENT
        power = _conditional_power(n, mean, sd, design.cap, levels[-1], design.margin)
        update = running
        out.outcome[update] = code[update]
        out.n[update], out.delta[update] = n[update], mean[update]
        out.low[update], out.high[update] = low[update], high[update]
        out.level[update], out.power[update] = 1 - levels[k - 1], power[update]
        decided = update & (code != UNDECIDED)
        last = update & ~decided & (k == design.max_looks)
        futile = update & ~decided & ~last & tested & (power < design.futility)
        for mask, why in ((decided, 1), (futile, 2), (last, 3)):
            out.stop_look[mask], out.reason[mask] = k, why
        running &= ~(decided | futile | last)
    return out


def _frame(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs as (label, seed, top1, usable), from a `collect_runs` frame or a plain one (label/config, seed,
    top1, optional status); a repeated (label, seed) keeps its last usable run."""
    label = "config" if "config" in runs.columns else "label"
    missing = {label, "seed", "top1"} - set(runs.columns)
    if missing:
        raise AnalysisError(
            f"runs need the columns label (or config), seed and top1; missing: {sorted(missing)}"
        )
    if "usable" in runs.columns:
        usable = runs["usable"].astype(bool)
    elif "status" in runs.columns:
        usable = runs["status"].eq("completed")
    else:
        usable = pd.Series(True, index=runs.index)
    top1 = pd.to_numeric(runs["top1"], errors="coerce")
    seed = pd.to_numeric(runs["seed"], errors="coerce")
    frame = pd.DataFrame(
        {"label": runs[label].astype(str), "seed": seed, "top1": top1, "usable": usable & top1.notna()}
    )
    for column in ("data", "model"):
        if column in runs.columns and runs[column].dropna().astype(str).nunique() > 1:
            raise AnalysisError(
                f"the runs span several {column} values; decide one study (one data set and model) at a time"
            )
    frame = frame.dropna(subset=["seed"])
    good = frame[frame["usable"]].drop_duplicates(["label", "seed"], keep="last")
    return pd.concat([good, frame[~frame["usable"]]], ignore_index=True)


def _paired(frame: pd.DataFrame, baseline: str) -> tuple[list[str], np.ndarray, list[list[float]]]:
    """Row labels (first seen, baseline left out), their paired differences left-aligned in ascending seed order
    (NaN-padded), and each row's paired seeds."""
    labels = [x for x in dict.fromkeys(frame["label"]) if x != baseline]
    good = frame[frame["usable"]]
    base = good[good["label"] == baseline].set_index("seed")["top1"]
    pairs, seeds = [], []
    for label in labels:
        row = good[good["label"] == label].set_index("seed")["top1"]
        shared = sorted(row.index.intersection(base.index))
        seeds.append(shared)
        pairs.append((row[shared] - base[shared]).to_numpy(dtype=float))
    width = max([len(p) for p in pairs] + [1])
    diffs = np.full((1, len(labels), width), np.nan)
    for i, p in enumerate(pairs):
        diffs[0, i, : len(p)] = p
    return labels, diffs, seeds


def decide(
    runs: pd.DataFrame,
    baseline: str = "baseline",
    margin: float = DEFAULT_MARGIN,
    alpha: float = ALPHA,
    max_looks: int = Design.max_looks,
    look: int | None = None,
    *,
    design: Design | None = None,
) -> pd.DataFrame:
    """Return the sequential decisions after look `look` (1-based) for the runs so far, one row per configuration.

    `runs`: every run so far (a `collect_runs` frame, or columns label/config, seed, top1 and optionally status);
    only completed runs count, and a repeated (configuration, seed) counts once. `design` (else one built from
    margin, alpha and max_looks with the default first look and step) fixes the schedule; `look`
    None means the latest look the baseline's seeds reach. Look k sees only the first `design.seeds_at(k)` paired
    seeds of each row, in ascending seed order.

    Columns: label, is_baseline, n (paired seeds the decision used), delta, low, high (the interval at `level`),
    outcome (better / worse / equivalent / undecided), stopped (no more seeds), stop_look (0 while running),
    reason (running, decided, futile, last look), power (the chance to be decided by the last look, as estimated
    at the last look taken), target (the paired seeds the row should have by the next look), tried (the seeds the
    row ran, any status), next_seeds (the seed ids to run next; see `next_seeds`).
    """
    design = design or Design(margin=margin, alpha=alpha, max_looks=max_looks)
    frame = _frame(runs)
    if baseline not in set(frame["label"]):
        labels = ", ".join(repr(x) for x in dict.fromkeys(frame["label"]))
        raise AnalysisError(f"baseline {baseline!r} has no runs; labels: {labels}")
    labels, diffs, _ = _paired(frame, baseline)
    base_good = sorted(frame.loc[frame["usable"] & frame["label"].eq(baseline), "seed"])
    if look is None:
        reached = [k for k in range(1, design.max_looks + 1) if len(base_good) >= design.seeds_at(k)]
        look = reached[-1] if reached else 1
    if not 1 <= look <= design.max_looks:
        raise AnalysisError(f"look {look} is outside 1..{design.max_looks}")
    result = run_looks(diffs, design, look, rows=design.rows or len(labels))
    table = pd.DataFrame(
        {
            "label": labels,
            "is_baseline": False,
            "n": result.n[0],
            "delta": result.delta[0],
            "low": result.low[0],
            "high": result.high[0],
            "level": result.level[0],
            "outcome": [OUTCOMES[c] for c in result.outcome[0]],
            "stopped": result.stop_look[0] > 0,
            "stop_look": result.stop_look[0],
            "reason": [REASONS[r] for r in result.reason[0]],
            "power": result.power[0],
        }
    )
    table["target"] = np.where(table["stopped"], table["n"], design.seeds_at(look + 1))
    tried = {label: set(group["seed"]) for label, group in frame.groupby("label")}
    base_failed = tried.get(baseline, set()) - set(base_good)
    good_seeds = {label: set(g["seed"]) for label, g in frame[frame["usable"]].groupby("label")}
    nexts = []
    for label, target, stopped in zip(table["label"], table["target"], table["stopped"], strict=True):
        have = len(good_seeds.get(label, set()) & set(base_good))
        more = 0 if stopped else max(int(target) - have, 0)
        nexts.append(_fresh(tried.get(label, set()) | base_failed, more))
    table["tried"] = [sorted(int(s) for s in tried.get(label, set())) for label in labels]
    table["next_seeds"] = nexts
    wanted = sorted({s for seeds in nexts for s in seeds} - tried.get(baseline, set()))
    base_row = {
        "label": baseline,
        "is_baseline": True,
        "n": len(base_good),
        "outcome": None,
        "stopped": not wanted and bool(table["stopped"].all()),
        "stop_look": 0,
        "reason": "baseline",
        "target": len(base_good) + len(wanted),
        "tried": sorted(int(s) for s in tried.get(baseline, set())),
        "next_seeds": wanted,
    }
    table = pd.concat([pd.DataFrame([base_row]), table], ignore_index=True)
    table.attrs.update(
        look=look, design=design, levels=design.levels(design.rows or len(labels)).tolist(), rows=len(labels)
    )
    return table


def _fresh(used: set, count: int) -> list[int]:
    """The `count` smallest non-negative seed ids not in `used`."""
    seeds, candidate = [], 0
    while len(seeds) < count:
        if candidate not in used:
            seeds.append(candidate)
        candidate += 1
    return seeds


def next_seeds(decisions: pd.DataFrame, cap: int | None = None) -> dict[str, list[int]]:
    """Return, for each configuration that needs more runs (the baseline included), the seed ids to run next.

    `decisions` is `decide`'s frame. Undecided rows still running get enough new seeds to reach the next look's
    count (never beyond `cap`, default the design's last look); the baseline gets every seed those rows will run
    that it has not run. An empty dict: nothing to run before the next look (the study is finished when
    every row has `stopped`)."""
    design = decisions.attrs.get("design")
    cap = cap if cap is not None else (design.cap if design else None)
    todo: dict[str, list[int]] = {}
    for _, row in decisions[~decisions["is_baseline"]].iterrows():
        seeds = list(row["next_seeds"])
        if cap is not None:
            seeds = seeds[: max(cap - int(row["n"]), 0)]
        if seeds:
            todo[row["label"]] = seeds
    base = decisions[decisions["is_baseline"]]
    if len(base) and todo:
        tried = set(base["tried"].iloc[0])
        wanted = sorted({s for seeds in todo.values() for s in seeds} - tried)
        if wanted:
            todo = {base["label"].iloc[0]: wanted, **todo}
    return todo


def replay(
    runs: pd.DataFrame,
    baseline: str = "baseline",
    design: Design | None = None,
    fixed: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Run the sequential rule on a recorded study, taking each row's seeds in ascending order, and compare it
    with the fixed grid (every recorded seed for every row, analysed by `ablation_table` at the same margin).

    Returns one row per configuration: label, n_fixed and outcome_fixed (the fixed grid), n (seeds the rule used),
    stop_look, reason, outcome (sequential), same (the outcomes agree). `attrs`: runs_fixed, runs_sequential (rows'
    seeds plus the baseline's, which runs as many as the row that runs longest), saved (fraction), same and
    differ (counts), decided_fixed, decided_sequential.
    """
    from analysis.table import ablation_table

    design = design or Design()
    frame = _frame(runs)
    final = decide(runs, baseline=baseline, design=design, look=design.max_looks)
    rows = final[~final["is_baseline"]].reset_index(drop=True)
    if fixed is None:
        fixed = ablation_table(runs, baseline=baseline, margin=design.margin, alpha=design.alpha)
    by_label = fixed.set_index("label")
    good = frame[frame["usable"]]
    n_fixed = good.groupby("label").size()
    out = pd.DataFrame(
        {
            "label": rows["label"],
            "n_fixed": [int(n_fixed.get(label, 0)) for label in rows["label"]],
            "outcome_fixed": [
                by_label["outcome"].get(label) if label in by_label.index else None for label in rows["label"]
            ],
            "n": rows["n"],
            "stop_look": rows["stop_look"],
            "reason": rows["reason"],
            "outcome": rows["outcome"],
            "delta": rows["delta"],
            "low": rows["low"],
            "high": rows["high"],
        }
    )
    out["outcome_fixed"] = out["outcome_fixed"].fillna("undecided")
    out["same"] = out["outcome"].eq(out["outcome_fixed"])
    runs_fixed = int(out["n_fixed"].sum() + n_fixed.get(baseline, 0))
    runs_sequential = int(out["n"].sum() + (out["n"].max() if len(out) else 0))
    out.attrs.update(
        runs_fixed=runs_fixed,
        runs_sequential=runs_sequential,
        saved=1 - runs_sequential / runs_fixed if runs_fixed else math.nan,
        same=int(out["same"].sum()),
        differ=int((~out["same"]).sum()),
        decided_fixed=int(out["outcome_fixed"].ne("undecided").sum()),
        decided_sequential=int(out["outcome"].ne("undecided").sum()),
        design=design,
    )
    return out


def render_replay(replayed: pd.DataFrame) -> str:
    """Return the replay as a markdown table and a paragraph with the run counts."""
    a = replayed.attrs
    design: Design = a["design"]
    shown = pd.DataFrame(
        {
            "label": replayed["label"],
            "fixed grid": [
                f"{o} (n={n})" for o, n in zip(replayed["outcome_fixed"], replayed["n_fixed"], strict=True)
            ],
            "sequential": replayed["outcome"],
            "stopped at": [
                f"look {k} (n={n}): {r}"
                for k, n, r in zip(replayed["stop_look"], replayed["n"], replayed["reason"], strict=True)
            ],
            "Δ [interval]": [
                f"{d:+.2f}" + ("" if np.isnan(lo) else f" [{lo:+.2f}, {hi:+.2f}]")
                for d, lo, hi in zip(replayed["delta"], replayed["low"], replayed["high"], strict=True)
            ],
            "same": ["yes" if s else "NO" for s in replayed["same"]],
        }
    )
    looks = ", ".join(str(design.seeds_at(k)) for k in range(1, design.max_looks + 1))
    text = shown.to_markdown(index=False, disable_numparse=True)
    differ = replayed[~replayed["same"]]
    paragraph = (
        f"Sequential rule: margin ±{design.margin:g}, family-wise alpha {design.alpha:g} (Bonferroni over "
        f"{len(replayed)} rows and {design.max_looks} looks, {design.spending} spending), looks at {looks} paired "
        f"seeds, futility stop below {design.futility:.0%} conditional power. It reaches {a['decided_sequential']} "
        f"decisions where the fixed grid reaches {a['decided_fixed']}; {a['same']} of {len(replayed)} rows end "
        f"with the fixed grid's outcome"
        + (
            " (differ: "
            + ", ".join(
                f"{lb}: {s} vs {f}"
                for lb, s, f in zip(differ["label"], differ["outcome"], differ["outcome_fixed"], strict=True)
            )
            + ")"
            if len(differ)
            else ""
        )
        + f". Runs: {a['runs_sequential']} sequential (rows' seeds plus the baseline's) against "
        f"{a['runs_fixed']} for the fixed grid: {a['saved']:.0%} fewer."
    )
    return f"{text}\n\n{paragraph}"
