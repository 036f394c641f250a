"""The statistics of an ablation table: confidence intervals, tests against the baseline, Holm, seeds needed.

The unit is the seed: one run per seed gives one top-1. Two rows that ran the same seeds share the seed's
initialisation and data order, so their difference is tested paired by seed (`scipy.stats.ttest_rel`), which
cancels the part of the noise both runs share; rows without at least two shared seeds are compared with Welch's
t-test (`scipy.stats.ttest_ind(equal_var=False)`). Every interval is 95% and every test two-sided at 5%; the
p-values of a table are Holm-corrected over its rows, so "resolved" holds for the table as a whole, not for one
row picked after looking. The seeds-needed figure is a power calculation (noncentral t from scipy.stats) that
takes the observed difference and spread as the truth: an estimate of the order of magnitude, not a promise.
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

    @property
    def paired(self) -> bool:
        """Whether the test paired the runs by seed."""
        return self.n_pairs > 0


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
            )
        delta = float(row.mean() - base.mean())
        if len(row) < 2 or len(base) < 2:
            return Comparison(delta, math.nan, math.nan, math.nan, f"none (n={min(len(row), len(base))})")
        result = stats.ttest_ind(row.to_numpy(), base.to_numpy(), equal_var=False)
        ci = result.confidence_interval(CONFIDENCE)
    return Comparison(
        delta,
        float(ci.low),
        float(ci.high),
        float(result.pvalue),
        "Welch t",
        sd=float(row.std(ddof=1)),
        sd_base=float(base.std(ddof=1)),
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
    n = np.arange(2, MAX_SEEDS + 1, dtype=float)
    if sd_base is None:
        variance, df = sd**2, n - 1
    else:
        variance = sd**2 + sd_base**2
        df = (n - 1) * variance**2 / (sd**4 + sd_base**4) if variance > 0 else 2 * (n - 1)
    if variance == 0:
        return 2.0  # no noise at all: the smallest test that has a spread to estimate
    noncentrality = abs(delta) / np.sqrt(variance / n)
    critical = stats.t.ppf(1 - alpha / 2, df)
    achieved = stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality)
    enough = np.flatnonzero(achieved >= power)
    return float(n[enough[0]]) if enough.size else math.inf


def verdict(resolved: bool, delta: float, paper_delta: float) -> str | None:
    """Return how a row's Δ stands to the paper's: agrees, opposite, not resolved; None without a paper Δ.

    A paper Δ that rounds to 0.0 has no sign to agree with: a resolved Δ there is "paper: no change".
    """
    if paper_delta is None or not math.isfinite(paper_delta):
        return None
    if not resolved:
        return "not resolved"
    if abs(paper_delta) < 0.05:
        return "paper: no change"
    return "agrees" if np.sign(delta) == np.sign(paper_delta) else "opposite"
