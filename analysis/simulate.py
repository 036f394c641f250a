"""A check of the sequential rule (analysis.sequential) on numbers drawn with known effects: no training involved.

Each simulated study has the rows of a recorded one (or `rows` rows) and draws every row's top-1 per seed as
baseline + Δ + noise, with the baseline's own per-seed noise shared by every row (rows are paired with the same
baseline run, so their tests are correlated, as in a real study). The spreads come from the recorded runs: each
row's spread of paired differences sd_r, split into the baseline's share s0 (s0² = half the smallest sd_r²,
the most the data allow every row to share) and the row's own sqrt(sd_r² - s0²); or one `sd` for every row. The
whole sequential procedure (`run_looks`, the core `decide` uses) then runs on each study, and the errors are
counted over studies, with Clopper-Pearson 95% intervals (`scipy.stats.binomtest(...).proportion_ci()`):

- **family-wise error under no effect** (Δ = 0 for every row): the share of studies with at least one row called
  better or worse. ("equivalent" is then a true claim.)
- **error at the equivalence boundary** (Δ = +margin for every row): the share of studies with at least one row
  called equivalent (|Δ| < margin is false there) or worse. ("better" is then a true claim.)
- **power at Δ = `effect`** (every row +1 point by default): the share of rows called better, and the family-wise
  error of the false claims there (worse or, for effect >= margin, equivalent).
- **the recorded Δs** (with a recorded study): each row at its own recorded mean Δ, which is what a design would
  decide on that table and at what cost; it is how a schedule and a budget are chosen before spending compute.

and the mean runs a study used (rows' paired seeds plus the baseline's, which runs as long as the longest row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.sequential import BETTER, EQUIVALENT, UNDECIDED, WORSE, Design, _frame, _paired, run_looks


@dataclass(frozen=True)
class Rate:
    """A share of `trials` with its Clopper-Pearson 95% interval."""

    count: int
    trials: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.count / self.trials if self.trials else float("nan")

    def __str__(self) -> str:
        return f"{self.value:.2%} [{self.low:.2%}, {self.high:.2%}] ({self.count}/{self.trials})"


def rate(count: int, trials: int) -> Rate:
    """Return `count` of `trials` with its exact (Clopper-Pearson) 95% interval."""
    ci = stats.binomtest(int(count), int(trials)).proportion_ci(confidence_level=0.95)
    return Rate(int(count), int(trials), float(ci.low), float(ci.high))


def recorded_spreads(runs: pd.DataFrame, baseline: str = "baseline", cap: int | None = None) -> np.ndarray:
    """Return each row's spread (sd) of paired differences to the baseline in a recorded study (first `cap` seeds)."""
    return recorded_rows(runs, baseline, cap)[1]


def recorded_rows(
    runs: pd.DataFrame, baseline: str = "baseline", cap: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return each row's mean and spread (sd) of paired differences to the baseline (first `cap` seeds)."""
    _, diffs, _ = _paired(_frame(runs), baseline)
    diffs = diffs[0] if cap is None else diffs[0, :, :cap]
    return np.nanmean(diffs, axis=1), np.nanstd(diffs, axis=1, ddof=1)


def draw(
    spreads: np.ndarray, effects: np.ndarray, studies: int, seeds: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw paired differences (studies, rows, seeds): Δ + own noise - the baseline's noise shared by every row."""
    spreads, effects = np.asarray(spreads, dtype=float), np.broadcast_to(effects, np.shape(spreads))
    shared = np.sqrt(np.min(spreads**2) / 2)
    own = np.sqrt(np.maximum(spreads**2 - shared**2, 0.0))
    base = rng.normal(0.0, shared, size=(studies, 1, seeds))
    rows = rng.normal(0.0, 1.0, size=(studies, len(spreads), seeds)) * own[None, :, None]
    return effects[None, :, None] + rows - base


@dataclass(frozen=True)
class Scenario:
    """One simulated condition: its name, the true Δ of every row, the false claims counted, the results."""

    name: str
    effect: float | None  # one Δ for every row, or None: each row its own (the recorded Δs)
    error: Rate  # studies with at least one false claim
    power: Rate | None  # rows called better (only where every Δ > 0)
    mean_runs: float
    decided: float  # mean share of rows decided
    rows: int


def run_scenario(
    name: str,
    effect: float | np.ndarray,
    spreads: np.ndarray,
    design: Design,
    studies: int,
    rng: np.random.Generator,
    max_runs: int | None = None,
) -> Scenario:
    """Simulate `studies` studies with rows at Δ = `effect` (one for all, or one per row) and count false claims,
    power and runs. `max_runs`: as the adaptive sweeper, a study stops before a look that would take it over."""
    effects = np.broadcast_to(np.asarray(effect, dtype=float), np.shape(spreads))
    diffs = draw(spreads, effects, studies, design.cap, rng)
    looks = run_looks(diffs, design, design.max_looks)
    code, n = looks.outcome, looks.n
    if max_runs is not None:
        for k in range(design.max_looks - 1, 0, -1):  # where the budget cuts a study, its decisions at look k
            cut = (n.sum(axis=1) + n.max(axis=1)) > max_runs
            if not cut.any():
                break
            earlier = run_looks(diffs, design, k)
            code, n = np.where(cut[:, None], earlier.outcome, code), np.where(cut[:, None], earlier.n, n)
    truth = effects[None, :]
    false = ((truth > 0) & (code == WORSE)) | ((truth < 0) & (code == BETTER))
    false |= (truth == 0) & ((code == WORSE) | (code == BETTER))
    false |= (np.abs(truth) >= design.margin) & (code == EQUIVALENT)
    errors = int(false.any(axis=1).sum())
    power = rate(int((code == BETTER).sum()), code.size) if (effects > 0).all() else None
    runs = n.sum(axis=1) + n.max(axis=1)
    decided = float((code != UNDECIDED).mean())
    single = float(effects[0]) if np.ndim(effect) == 0 else None
    return Scenario(name, single, rate(errors, studies), power, float(runs.mean()), decided, len(spreads))


def simulate(
    spreads: np.ndarray,
    design: Design | None = None,
    studies: int = 1000,
    effect: float = 1.0,
    seed: int = 0,
    recorded: np.ndarray | None = None,
    max_runs: int | None = None,
) -> list[Scenario]:
    """Run the scenarios (no effect, the equivalence boundary, Δ = `effect`, and with `recorded` each row at its
    recorded Δ) for rows with `spreads`, each study stopping where `max_runs` would be exceeded."""
    design = design or Design()
    rng = np.random.default_rng(seed)
    cases = [
        ("no effect (Δ = 0)", 0.0),
        (f"equivalence boundary (Δ = +{design.margin:g})", design.margin),
        (f"Δ = {effect:+g}", effect),
    ]
    if recorded is not None:
        cases.append(("the recorded Δs (each row its own)", np.asarray(recorded, dtype=float)))
    return [run_scenario(name, e, spreads, design, studies, rng, max_runs) for name, e in cases]


def render_simulation(scenarios: list[Scenario], spreads: np.ndarray, design: Design, studies: int) -> str:
    """Return the simulation's results as a markdown table and a line on what was simulated."""
    fixed = (len(spreads) + 1) * design.cap
    shown = pd.DataFrame(
        {
            "scenario": [s.name for s in scenarios],
            "studies with a false claim [95% CI]": [str(s.error) for s in scenarios],
            "rows called better [95% CI]": [str(s.power) if s.power else "–" for s in scenarios],
            "rows decided": [f"{s.decided:.0%} ({s.decided * s.rows:.1f} of {s.rows})" for s in scenarios],
            "mean runs": [f"{s.mean_runs:.1f} of {fixed}" for s in scenarios],
        }
    )
    looks = ", ".join(str(design.seeds_at(k)) for k in range(1, design.max_looks + 1))
    head = (
        f"{studies} simulated studies per scenario, {len(spreads)} rows, spreads of the paired differences "
        f"{np.min(spreads):.2f} to {np.max(spreads):.2f} points (median {np.median(spreads):.2f}); margin "
        f"±{design.margin:g}, alpha {design.alpha:g}, looks at {looks} seeds, {design.spending} spending, futility "
        f"below {design.futility:.0%}. A false claim: better or worse where Δ = 0; equivalent or worse where "
        f"Δ = +margin; worse (or equivalent, when Δ >= margin) where Δ > 0."
    )
    return head + "\n\n" + shown.to_markdown(index=False, disable_numparse=True)
