"""The statistics against values worked out by hand or printed in textbooks (t with 2 df has a closed form)."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.stats import compare, holm, mean_interval, seeds_needed, verdict

T_975_DF2 = 4.302652729911275  # t quantile, 2 degrees of freedom (tables: 4.303)
T_975_DF4 = 2.7764451051977987  # (tables: 2.776)


def p_two_sided_df2(t: float) -> float:
    """Student's t with 2 df: P(|T| > t) = 1 - t / sqrt(2 + t^2)."""
    return 1 - abs(t) / math.sqrt(2 + t * t)


def by_seed(values: dict[int, float]) -> pd.Series:
    return pd.Series(values, dtype=float)


def test_paired_by_seed_matches_the_closed_form():
    base = by_seed({0: 70.0, 1: 72.0, 2: 71.0})
    row = by_seed({0: 71.0, 1: 74.0, 2: 74.0})  # differences 1, 2, 3: mean 2, sd 1
    c = compare(row, base)
    assert c.test == "paired t" and c.n_pairs == 3 and c.paired
    assert c.delta == pytest.approx(2.0)
    assert c.p == pytest.approx(p_two_sided_df2(2 * math.sqrt(3)))  # t = 2 / (1 / sqrt 3)
    half = T_975_DF2 / math.sqrt(3)
    assert (c.low, c.high) == pytest.approx((2 - half, 2 + half))
    assert c.sd == pytest.approx(1.0)


def test_pairing_follows_the_seed_not_the_order():
    base = by_seed({0: 70.0, 1: 72.0, 2: 71.0})
    shuffled = by_seed({2: 74.0, 0: 71.0, 1: 74.0})
    assert compare(shuffled, base).delta == pytest.approx(2.0)
    assert compare(shuffled, base).p == pytest.approx(p_two_sided_df2(2 * math.sqrt(3)))


def test_paired_over_the_shared_seeds_when_two_or_more():
    base = by_seed({0: 70.0, 1: 72.0, 2: 71.0})
    c = compare(by_seed({0: 71.0, 1: 74.0, 7: 99.0}), base)
    assert c.test == "paired t" and c.n_pairs == 2
    assert c.delta == pytest.approx(1.5)  # seeds 0 and 1 only


def test_welch_without_shared_seeds():
    base = by_seed({0: 70.0, 1: 72.0, 2: 71.0})
    c = compare(by_seed({3: 72.0, 4: 74.0, 5: 73.0}), base)
    assert c.test == "Welch t" and c.n_pairs == 0 and not c.paired
    assert c.delta == pytest.approx(2.0)
    se = math.sqrt(1 / 3 + 1 / 3)  # both sds are 1; equal n and sd: Welch's df = 2 (n - 1) = 4
    assert (c.low, c.high) == pytest.approx((2 - T_975_DF4 * se, 2 + T_975_DF4 * se))
    assert (c.sd, c.sd_base) == pytest.approx((1.0, 1.0))


def test_repeated_seeds_are_not_paired():
    base = by_seed({0: 70.0, 1: 72.0, 2: 71.0})
    row = pd.Series([71.0, 73.0, 72.0], index=[0, 0, 1])
    assert compare(row, base).test == "Welch t"


def test_a_single_run_has_no_ci_and_no_test():
    c = compare(by_seed({0: 69.0}), by_seed({0: 70.0, 1: 72.0, 2: 71.0}))
    assert c.delta == pytest.approx(-2.0)
    assert c.test == "none (n=1)"
    assert math.isnan(c.low) and math.isnan(c.high) and math.isnan(c.p)


def test_paired_differences_that_are_all_the_same_are_not_tested():
    # one test image (0.01 points) lower on every seed: the t statistic would divide by rounding error
    base = by_seed({0: 82.24, 1: 81.99, 2: 82.37})
    row = by_seed({0: 82.23, 1: 81.98, 2: 82.36})
    c = compare(row, base)
    assert c.test == "none: equal differences" and c.n_pairs == 3 and c.sd == 0.0
    assert c.delta == pytest.approx(-0.01)
    assert math.isnan(c.p) and math.isnan(c.low) and math.isnan(c.high)


def test_holm_against_a_worked_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> monotone: 0.06
    adjusted = holm(np.array([0.01, 0.04, 0.03, 0.005, math.nan]))
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    assert holm(np.array([0.5, 0.9])) == pytest.approx([1.0, 1.0])  # capped at 1


def test_seeds_needed_matches_textbook_power_tables():
    # G*Power / Cohen: d = 0.5, alpha 0.05 two-sided, power 0.8: 34 (one-sample / paired), 64 per group
    assert seeds_needed(0.5, 1.0) == 34
    assert seeds_needed(0.5, 1.0, sd_base=1.0) == 64
    assert seeds_needed(1.0, 1.0) == 10
    assert seeds_needed(1.0, 1.0, alpha=0.01) > 10  # a stricter level needs more seeds
    assert seeds_needed(0.001, 1.0) == math.inf  # beyond 1000 seeds
    assert math.isnan(seeds_needed(1.0, math.nan))  # one run: no spread to go on


def test_mean_interval_t_below_20_and_bootstrap_from_20():
    t = mean_interval(np.array([70.0, 72.0, 71.0]))
    assert t.method == "t"
    assert (t.low, t.high) == pytest.approx((71 - T_975_DF2 / math.sqrt(3), 71 + T_975_DF2 / math.sqrt(3)))
    one = mean_interval(np.array([70.0]))
    assert one.method == "none (n=1)" and math.isnan(one.low)
    values = np.random.default_rng(0).normal(80.0, 1.0, size=25)
    boot = mean_interval(values)
    assert boot.method == "BCa bootstrap"
    assert boot.low < values.mean() < boot.high
    assert boot.high - boot.low == pytest.approx(2 * 1.96 / 5, rel=0.35)  # about the normal interval's width


def test_verdict():
    assert verdict("better", 2.0, 0.8) == "agrees"
    assert verdict("worse", -2.0, 0.8) == "opposite"
    assert verdict("undecided", 2.0, 0.8) == "not resolved"
    assert verdict("better", 0.5, 0.0) == "paper: no change"
    assert verdict("better", 0.5, math.nan) is None
    # an equivalent row agrees where the paper saw no change, contradicts a change of a margin or more
    assert verdict("equivalent", 0.1, 0.0) == "agrees"
    assert verdict("equivalent", 0.1, -0.7, margin=0.5) == "paper: change"
    assert verdict("equivalent", 0.1, 0.3, margin=0.5) == "paper: within margin"
