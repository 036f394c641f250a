"""The sequential rule: decisions from the data so far only, the next seeds, the replay of the mini study and the
simulated error rates."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import collect_runs
from analysis.__main__ import main
from analysis.sequential import Design, decide, next_seeds, replay, run_looks
from analysis.simulate import rate, recorded_rows, recorded_spreads, run_scenario
from analysis.stats import OUTCOMES

ROOT = Path(__file__).resolve().parents[2]
MINI = ROOT / "experiments" / "mini" / "runs.csv"
BASE = [80.0, 81.0, 79.5, 80.5, 80.2]


def runs_of(rows: dict[str, list[float]], seeds: int = 5) -> pd.DataFrame:
    """A runs frame: the baseline and each row's top-1 = baseline + the given per-seed difference."""
    records = [{"label": "baseline", "seed": s, "top1": BASE[s], "status": "completed"} for s in range(seeds)]
    for label, diffs in rows.items():
        records += [
            {"label": label, "seed": s, "top1": BASE[s] + d, "status": "completed"}
            for s, d in enumerate(diffs[:seeds])
        ]
    return pd.DataFrame(records)


# One row, one comparison: each look at 0.05 / 3 (Pocock, Bonferroni over 3 looks). Differences 1.0, 1.4, 0.6
# (mean 1, sd 0.4) leave it undecided with 3 seeds; the fourth (1.0) decides it better; the fifth is wild.
LATE = {"late": [1.0, 1.4, 0.6, 1.0, -50.0]}
DESIGN = Design(margin=0.5, max_looks=3, first=3, step=1, spending="pocock", futility=0.0)


def test_a_row_is_decided_in_a_later_look_from_the_seeds_so_far_only():
    runs = runs_of(LATE)
    first = decide(runs, design=DESIGN, look=1).set_index("label").loc["late"]
    assert first["outcome"] == "undecided" and first["n"] == 3 and not first["stopped"]
    assert first["delta"] == pytest.approx(1.0) and first["low"] < 0
    assert first["level"] == pytest.approx(1 - 0.05 / 3)
    # the same decision as a study that has only run seeds 0-2: seeds 3 and 4 are not seen at look 1
    only_three = decide(runs[runs["seed"] < 3], design=DESIGN, look=1).set_index("label").loc["late"]
    assert only_three["outcome"] == first["outcome"] and only_three["n"] == first["n"]
    assert (only_three["low"], only_three["high"]) == pytest.approx((first["low"], first["high"]))
    second = decide(runs, design=DESIGN, look=2).set_index("label").loc["late"]
    assert second["outcome"] == "better" and second["n"] == 4 and second["stop_look"] == 2
    assert second["low"] > 0 and second["delta"] == pytest.approx(1.0)
    # a decided row stays decided: the wild fifth seed (-50) does not undo it at the last look
    third = decide(runs, design=DESIGN, look=3).set_index("label").loc["late"]
    assert third["outcome"] == "better" and third["stop_look"] == 2 and third["n"] == 4


def test_the_interval_at_a_look_is_the_t_interval_at_that_looks_level():
    from scipy import stats

    runs = runs_of(LATE)
    second = decide(runs, design=DESIGN, look=2).set_index("label").loc["late"]
    diffs = np.array(LATE["late"][:4])
    half = stats.t.ppf(1 - 0.05 / 3 / 2, 3) * diffs.std(ddof=1) / 2
    assert (second["low"], second["high"]) == pytest.approx((1.0 - half, 1.0 + half))


def test_next_seeds_ask_the_undecided_rows_and_the_baseline_for_the_next_look():
    runs = runs_of({**LATE, "clear": [-3.0, -3.1, -2.9, -3.0, -3.0]}, seeds=3)
    decisions = decide(runs, design=DESIGN, look=1)
    by_label = decisions.set_index("label")
    assert by_label.loc["clear", "outcome"] == "worse" and by_label.loc["clear", "stopped"]
    assert next_seeds(decisions) == {"baseline": [3], "late": [3]}
    # at the cap (5 seeds at look 3) nothing more is asked
    done = decide(runs_of({"noisy": [0.5, -0.6, 0.9, -0.4, 0.1]}), design=DESIGN, look=3)
    assert done.set_index("label").loc["noisy", "reason"] == "last look"
    assert next_seeds(done) == {}


def test_a_failed_seed_is_skipped_and_a_fresh_one_asked_for():
    runs = runs_of(LATE, seeds=3)
    runs.loc[(runs["label"] == "late") & (runs["seed"] == 1), "status"] = "diverged"
    decisions = decide(runs, design=DESIGN, look=1)
    late = decisions.set_index("label").loc["late"]
    assert late["n"] == 2 and late["tried"] == [0, 1, 2]
    assert next_seeds(decisions) == {"baseline": [3, 4], "late": [3, 4]}  # 4 pairs by look 2: two more


def test_futility_stops_a_hopeless_row_early():
    runs = runs_of({"noisy": [0.9, -0.8, 0.2, 0.5, -0.3]})
    row = (
        decide(runs, design=Design(first=3, max_looks=3, spending="pocock", futility=0.1), look=3)
        .set_index("label")
        .loc["noisy"]
    )
    assert row["reason"] == "futile" and row["stop_look"] == 1 and row["power"] < 0.1


def test_decide_and_the_vectorised_core_agree():
    rows = {**LATE, "clear": [-3.0, -3.1, -2.9, -3.0, -3.0], "noisy": [0.5, -0.6, 0.9, -0.4, 0.1]}
    table = decide(runs_of(rows), design=DESIGN, look=3).set_index("label").loc[list(rows)]
    looks = run_looks(np.array([list(rows.values())]), DESIGN, 3)
    assert [OUTCOMES[c] for c in looks.outcome[0]] == table["outcome"].tolist()
    assert looks.stop_look[0].tolist() == table["stop_look"].tolist()
    assert looks.n[0].tolist() == table["n"].tolist()
    # with 3 rows each look is at 0.05 / 9: "late" is no longer decided at look 2 and its wild fifth seed
    # (-50) leaves it undecided; "clear" (-3, sd 0.07) is decided at the first look
    assert table["outcome"].tolist() == ["undecided", "worse", "undecided"]
    assert table["stop_look"].tolist() == [3, 1, 3]


def test_bonferroni_levels_sum_to_alpha_over_rows():
    for spending in ("pocock", "obf"):
        levels = Design(max_looks=4, spending=spending).levels(22)
        assert levels.sum() == pytest.approx(0.05 / 22)
    obf = Design(max_looks=3, spending="obf").levels(22)
    assert obf[0] < obf[1] < obf[2]  # little early, most at the last look


def test_replay_of_the_mini_study_reaches_the_fixed_grids_decisions_with_fewer_runs():
    replayed = replay(collect_runs([MINI]))
    a = replayed.attrs
    assert a["runs_fixed"] == 115  # 23 configurations x 5 seeds
    assert a["decided_fixed"] == 7 and a["decided_sequential"] == 7 and a["same"] == 22
    # the default schedule (looks at 2, 3, 4, 5 seeds, O'Brien-Fleming-like spending): at least 30% fewer runs
    assert a["runs_sequential"] == 71 and a["saved"] == pytest.approx(1 - 71 / 115) and a["saved"] >= 0.30
    by_label = replayed.set_index("label")
    assert by_label.loc["no residual connection", ["outcome", "stop_look", "n"]].tolist() == ["worse", 2, 3]
    assert by_label.loc["BN", ["outcome", "stop_look", "n"]].tolist() == ["better", 4, 5]


def test_replay_command(capsys):
    assert main(["replay", str(MINI), "--margin", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "| no residual connection" in out
    assert (
        "Runs: 71 sequential (rows' seeds plus the baseline's) against 115 for the fixed grid: 38% fewer."
        in out
    )


def test_no_effect_family_wise_error_stays_under_5_percent():
    """1000 studies at Δ = 0 with the mini study's spreads: the estimate must stay at or below 5% plus the
    sampling error of 1000 studies (the 95% half-width at 5%: 1.96 sqrt(0.05 0.95 / 1000) = 1.35 points)."""
    spreads = recorded_spreads(collect_runs([MINI]))
    assert len(spreads) == 22 and np.all((spreads > 0.05) & (spreads < 0.8))
    scenario = run_scenario("null", 0.0, spreads, Design(), 1000, np.random.default_rng(1))
    tolerance = 1.96 * math.sqrt(0.05 * 0.95 / 1000)
    assert scenario.error.value <= 0.05 + tolerance
    assert scenario.error.low < 0.05  # the data are compatible with an error of at most 5%
    boundary = run_scenario("boundary", 0.5, spreads, Design(), 1000, np.random.default_rng(2))
    assert boundary.error.value <= 0.05 + tolerance
    # the same measurement catches a rule without the correction over rows (each row at 5%): it can fail
    loose = run_scenario(
        "loose", 0.0, spreads, Design(rows=1, max_looks=1, first=5), 1000, np.random.default_rng(3)
    )
    assert loose.error.low > 0.05


def test_rate_has_the_clopper_pearson_interval():
    r = rate(0, 1000)
    assert r.value == 0 and r.low == 0 and r.high == pytest.approx(1 - 0.025 ** (1 / 1000))


def test_simulate_command(capsys):
    assert main(["simulate", "--sd", "0.3", "--rows", "5", "--studies", "200", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "Sequential rule:" in out and "Fixed grid (5 seeds every row, one look)" in out
    assert "no effect (Δ = 0)" in out and "Δ = +1" in out


def test_recorded_effects_scenario_and_the_budget():
    """Each row at its recorded Δ: the huge effects (no residual, no norm) are always decided, and a budget cuts
    studies at the last look it affords, so they use fewer runs and decide no more rows than without it."""
    mean, sd = recorded_rows(collect_runs([MINI]))
    design = Design(first=4, step=3, max_looks=5, spending="pocock")  # the mini study's schedule
    free = run_scenario("recorded", mean, sd, design, 200, np.random.default_rng(5))
    capped = run_scenario("recorded", mean, sd, design, 200, np.random.default_rng(5), max_runs=150)
    assert free.effect is None and free.rows == 22 and free.power is None
    assert capped.mean_runs <= 150 < free.mean_runs
    assert capped.decided < free.decided
    assert capped.decided * 22 >= 2  # no residual (-72 points) and no norm (-4) at the first look


def test_simulate_command_with_a_recorded_study_and_a_budget(capsys):
    argv = ["simulate", str(MINI), "--studies", "100", "--first", "4", "--step", "3", "--looks", "5"]
    assert main([*argv, "--max-runs", "200"]) == 0
    assert "the recorded Δs (each row its own)" in capsys.readouterr().out
    assert main([*argv, "--max-runs", "0"]) == 2
    assert "--max-runs 0 must be at least 1" in capsys.readouterr().err


def test_the_study_plot_draws_each_row_with_the_interval_its_decision_used(tmp_path, monkeypatch):
    from analysis import plots

    runs = runs_of({"up": [1.0, 1.1, 0.9, 1.0, 1.05], "same": [0.0, 0.05, -0.05, 0.02, -0.02], "one": [0.3]})
    decisions = decide(runs, baseline="baseline", design=DESIGN, look=3)
    drawn = {}
    monkeypatch.setattr(
        plots, "plot_delta_vs_baseline", lambda table, path: drawn.update(table=table) or path
    )
    plots.plot_decisions(decisions, tmp_path / "study.png", names={"up": "better row"}, groups={"same": "g"})
    table = drawn["table"]
    # up and same are decided at the first look, with 3 seeds of their 5; `one` has a single seed
    assert table["label"].tolist() == ["baseline (n=5)", "better row (n=3)", "one (n=1)", "same (n=3)"]
    assert table["group"].tolist() == ["", "", "", "g"]  # by group, the rows' order kept within each
    up = table.set_index("label").loc["better row (n=3)"]
    row = decisions.set_index("label").loc["up"]
    assert (up["delta_ci_low"], up["delta_ci_high"], up["outcome"]) == (row["low"], row["high"], "better")
    assert table.attrs["margin"] == 0.5 and "group-sequential" in table.attrs["interval"]
    # and the real drawing, with a row that has one seed (no interval) and the baseline (no Δ)
    monkeypatch.undo()
    path = plots.plot_decisions(decisions, tmp_path / "study.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
