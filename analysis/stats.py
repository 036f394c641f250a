"""The statistics of an ablation table: confidence intervals, tests against the baseline, outcomes, seeds needed.

The unit is the seed: one run per seed gives one top-1 (repeated runs of one seed are one observation; the table
keeps one, see `analysis.collect`). Two rows that ran the same seeds share the seed's initialisation and data
order, so their difference is tested paired by seed (`scipy.stats.ttest_rel`), which cancels the part of the noise
both runs share; rows without at least two shared seeds are compared with Welch's t-test
(`scipy.stats.ttest_ind(equal_var=False)`).

Every row gets one of four outcomes, all read off one interval per row: **better** (the interval lies above 0),
**worse** (below 0), **equivalent** (inside ±margin: two one-sided tests, TOST) or **undecided**. The interval of
each of the m rows tested is a Bonferroni-adjusted one, at level 1 - alpha/m, so all m intervals hold together
with probability at least 1 - alpha whatever the rows' correlation (they share the baseline), and every claim
made from them (a difference, its sign, an equivalence) is wrong for some row with probability at most alpha:
the family-wise error covers the three kinds of claim at once. The interval excludes 0 exactly when the
Bonferroni-adjusted two-sided p is below alpha, and lies inside ±margin exactly when the adjusted TOST p
(2 m p_TOST) is, so interval, p and outcome cannot disagree. Holm's step-down is not used for the outcomes: with
equivalence claims every row can carry a true claim, and then Holm's later, laxer steps no longer bound the error
of a wrong sign (two rows at Δ = 0, both equivalent, tested at alpha/2 and alpha: up to 1.5 alpha).

The seeds-needed figure is a power calculation (noncentral t from scipy.stats) that takes the observed difference
and spread as the truth: an estimate of the order of magnitude, not a promise.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
CONFIDENCE = 1 - ALPHA
POWER = 0.8
# From this many seeds on, the mean's interval is a BCa bootstrap (no normality assumed); below it the bootstrap
# under-covers and the t-interval is the better estimate.
BOOTSTRAP_MIN_N = 20
MAX_SEEDS = 1000  # seeds-needed estimates beyond this are reported as infinite
SAME_DIFFERENCE = 1e-9  # paired differences closer than this (in top-1 points) are the same difference
NO_SPREAD = "none: equal differences"  # the test column of a paired row whose differences are all the same
# The default equivalence margin, in points of top-1: a difference smaller than this is "equivalent". Half a point
# is about the seed-to-seed spread of one configuration's top-1 in the recorded studies (experiments/mini: 0.2 to
# 0.6) and below the smallest non-zero differences the MetaFormer paper reports for its ablations (0.1 to 0.8
# points are reported as changes there, so a margin beyond 0.5 would call some of them "no change").
DEFAULT_MARGIN = 0.5
OUTCOMES = ("better", "worse", "equivalent", "undecided")


@dataclass(frozen=True)
class Interval:
    """A 95% confidence interval and the method that gave it (NaN bounds when there is none)."""

    low: float
    high: float
    method: str


@dataclass(frozen=True)
class Comparison:
    """One row against its baseline: Δ (row minus baseline), its 95% CI, the two-sided p-value and the test.

    `sd` is the spread the test saw: of the paired differences (paired t), else of the row's runs, with
    `sd_base` the baseline's (Welch). `n_pairs` counts the seeds paired (0 for Welch or no test).
    """

    delta: float
    low: float
    high: float
    p: float
    test: str
    n_pairs: int = 0
    sd: float = math.nan
    sd_base: float = math.nan
    se: float = math.nan  # the standard error of Δ the test used
    df: float = math.nan  # and its degrees of freedom

    @property
    def paired(self) -> bool:
        """Whether the test paired the runs by seed."""
        return self.n_pairs > 0

    @property
    def tested(self) -> bool:
        """Whether there was a spread to test against (else no interval, no p, no outcome but undecided)."""
        return math.isfinite(self.se) and self.se > 0 and math.isfinite(self.df)

    def interval(self, level: float) -> tuple[float, float]:
        """Return the two-sided t interval of Δ at confidence `level` (NaN bounds without a test)."""
        if not self.tested:
            return math.nan, math.nan
        half = float(stats.t.ppf(0.5 + level / 2, self.df)) * self.se
        return self.delta - half, self.delta + half

    def p_equivalence(self, margin: float) -> float:
        """Return the TOST p-value of |Δ| < margin: the larger of the two one-sided p-values (NaN without a test).

        H0: Δ <= -margin against Δ > -margin, and H0: Δ >= margin against Δ < margin; the same t statistics as
        `scipy.stats.ttest_1samp(differences, -margin, alternative="greater")` and
        `ttest_1samp(differences, margin, alternative="less")` for paired runs.
        """
        if not self.tested:
            return math.nan
        lower = stats.t.sf((self.delta + margin) / self.se, self.df)
        upper = stats.t.cdf((self.delta - margin) / self.se, self.df)
        return float(max(lower, upper))


def mean_interval(values: np.ndarray) -> Interval:
    """Return the 95% CI of the mean of `values`: t-interval, BCa bootstrap from BOOTSTRAP_MIN_N values on."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return Interval(math.nan, math.nan, f"none (n={len(values)})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if len(values) >= BOOTSTRAP_MIN_N and np.ptp(values) > 0:
            ci = stats.bootstrap(
                (values,), np.mean, confidence_level=CONFIDENCE, method="BCa", rng=np.random.default_rng(0)
            ).confidence_interval
            return Interval(float(ci.low), float(ci.high), "BCa bootstrap")
        ci = stats.ttest_1samp(values, 0.0).confidence_interval(CONFIDENCE)
    return Interval(float(ci.low), float(ci.high), "t")


def _by_seed(top1: pd.Series) -> pd.Series | None:
    """The runs indexed by seed, or None when seeds are missing or repeated (then pairing is ambiguous)."""
    if top1.index.hasnans or not top1.index.is_unique:
        return None
    return top1


def compare(row: pd.Series, base: pd.Series) -> Comparison:
    """Compare a row's top-1 runs with the baseline's (each a Series indexed by seed): Δ, 95% CI, p, test.

    Paired t-test over the seeds both have when they share at least two (each seed once per row), else Welch's
    t-test on all runs; with a single run on either side, or paired differences that are all the same, there is
    no spread to test against, so no CI and no p.
    """
    row, base = row.astype(float), base.astype(float)
    paired_row, paired_base = _by_seed(row), _by_seed(base)
    shared = (
        paired_row.index.intersection(paired_base.index)
        if paired_row is not None and paired_base is not None
        else []
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if len(shared) >= 2:
            a, b = row[shared].to_numpy(), base[shared].to_numpy()
            diff = a - b
            if np.allclose(diff, diff[0], rtol=0.0, atol=SAME_DIFFERENCE):
                # Every seed moved by the same amount (top-1 moves in steps of one test image): the t statistic
                # divides by a spread of rounding error, and its p-value would be an artefact of that.
                return Comparison(
                    float(diff.mean()), math.nan, math.nan, math.nan, NO_SPREAD, n_pairs=len(shared), sd=0.0
                )
            result = stats.ttest_rel(a, b)
            ci = result.confidence_interval(CONFIDENCE)
            return Comparison(
                float(diff.mean()),
                float(ci.low),
                float(ci.high),
                float(result.pvalue),
                "paired t",
                n_pairs=len(shared),
                sd=float(diff.std(ddof=1)),
                se=float(diff.std(ddof=1) / math.sqrt(len(diff))),
                df=float(result.df),
            )
        delta = float(row.mean() - base.mean())
        if len(row) < 2 or len(base) < 2:
            return Comparison(delta, math.nan, math.nan, math.nan, f"none (n={min(len(row), len(base))})")
        result = stats.ttest_ind(row.to_numpy(), base.to_numpy(), equal_var=False)
        ci = result.confidence_interval(CONFIDENCE)
    sd, sd_base = float(row.std(ddof=1)), float(base.std(ddof=1))
    return Comparison(
        delta,
        float(ci.low),
        float(ci.high),
        float(result.pvalue),
        "Welch t",
        sd=sd,
        sd_base=sd_base,
        se=math.sqrt(sd**2 / len(row) + sd_base**2 / len(base)),
        df=float(result.df),
    )


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Return Holm's step-down adjusted p-values; NaN entries (rows without a test) stay NaN and do not count."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    # The k-th smallest p (0-based) is multiplied by m - k; the running maximum keeps the order monotone.
    steps = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted[order] = np.minimum(steps, 1.0)
    return adjusted


def _seed_grid(sd: float, sd_base: float | None) -> tuple[np.ndarray, float, np.ndarray]:
    """Seeds per row 2..MAX_SEEDS, the variance of Δ per seed, and the t-test's degrees of freedom at each n:
    paired when `sd_base` is None, else Welch with equal seeds in both rows."""
    n = np.arange(2, MAX_SEEDS + 1, dtype=float)
    if sd_base is None:
        return n, sd**2, n - 1
    variance = sd**2 + sd_base**2
    return n, variance, (n - 1) * variance**2 / (sd**4 + sd_base**4) if variance > 0 else 2 * (n - 1)


def seeds_needed(
    delta: float, sd: float, sd_base: float | None = None, alpha: float = ALPHA, power: float = POWER
) -> float:
    """Return the seeds per row for `power` to detect `delta` at level `alpha` (two-sided), as an estimate.

    Paired t-test when `sd_base` is None (`sd`: spread of the paired differences), else Welch's t-test with the
    same number of seeds in both rows (`sd`, `sd_base`: each row's spread; Welch-Satterthwaite degrees of
    freedom). NaN when the spread is unknown, infinity beyond MAX_SEEDS (Δ too small for the noise).
    """
    if not (math.isfinite(delta) and math.isfinite(sd)) or (
        sd_base is not None and not math.isfinite(sd_base)
    ):
        return math.nan
    if delta == 0:
        return math.inf
    n, variance, df = _seed_grid(sd, sd_base)
    if variance == 0:
        return 2.0  # no noise at all: the smallest test that has a spread to estimate
    noncentrality = abs(delta) / np.sqrt(variance / n)
    critical = stats.t.ppf(1 - alpha / 2, df)
    achieved = stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality)
    enough = np.flatnonzero(achieved >= power)
    return float(n[enough[0]]) if enough.size else math.inf


def seeds_needed_equivalence(
    delta: float,
    sd: float,
    margin: float,
    sd_base: float | None = None,
    alpha: float = ALPHA,
    power: float = POWER,
) -> float:
    """Return the seeds per row for `power` to show |Δ| < margin with the interval at level 1 - alpha, as an estimate.

    The row is equivalent when the two-sided (1 - alpha) interval lies inside ±margin, i.e. both one-sided tests at
    alpha/2 reject; their joint power is bounded below by P1 + P2 - 1 (noncentral t), which is what is used.
    Paired when `sd_base` is None, else Welch with equal seeds in both rows. NaN when the spread is unknown,
    infinity when |Δ| >= margin (equivalence is then false) or beyond MAX_SEEDS.
    """
    if not (math.isfinite(delta) and math.isfinite(sd) and margin > 0) or (
        sd_base is not None and not math.isfinite(sd_base)
    ):
        return math.nan
    if abs(delta) >= margin:
        return math.inf
    n, variance, df = _seed_grid(sd, sd_base)
    if variance == 0:
        return 2.0
    se = np.sqrt(variance / n)
    critical = stats.t.ppf(1 - alpha / 2, df)
    above = stats.nct.sf(critical, df, (delta + margin) / se)  # the lower test rejects Δ <= -margin
    below = stats.nct.cdf(-critical, df, (delta - margin) / se)  # the upper test rejects Δ >= margin
    achieved = above + below - 1
    enough = np.flatnonzero(achieved >= power)
    return float(n[enough[0]]) if enough.size else math.inf


def outcome(low: float, high: float, margin: float) -> str:
    """Return what an interval of Δ decides: better (above 0), worse (below 0), equivalent (inside ±margin),
    undecided (none of these, or no interval). A small but sure difference inside the margin is better/worse."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undecided"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    if -margin < low and high < margin:
        return "equivalent"
    return "undecided"


def bonferroni(pvalues: np.ndarray, factor: float | None = None) -> np.ndarray:
    """Return the p-values multiplied by `factor` (default: how many are not NaN), capped at 1; NaN stays NaN."""
    p = np.asarray(pvalues, dtype=float)
    m = int(np.count_nonzero(~np.isnan(p))) if factor is None else factor
    return np.minimum(p * max(m, 1), 1.0)


def verdict(decided: str, delta: float, paper_delta: float, margin: float = DEFAULT_MARGIN) -> str | None:
    """Return how a row's outcome stands to the paper's Δ; None without a paper Δ.

    better/worse: "agrees" with the paper's sign, "opposite" against it, "paper: no change" where the paper's Δ
    rounds to 0.0 (no sign to agree with). equivalent: "agrees" where the paper saw no change (Δ 0.0), "paper:
    change" where the paper's Δ is a margin or more (we rule out what it reported), "paper: within margin" in
    between (the paper's change is smaller than what we can rule out). undecided: "not resolved".
    """
    if paper_delta is None or not math.isfinite(paper_delta):
        return None
    no_change = abs(paper_delta) < 0.05
    if decided == "equivalent":
        if no_change:
            return "agrees"
        return "paper: change" if abs(paper_delta) >= margin else "paper: within margin"
    if decided not in ("better", "worse"):
        return "not resolved"
    if no_change:
        return "paper: no change"
    return "agrees" if np.sign(delta) == np.sign(paper_delta) else "opposite"
