"""The four outcomes with an equivalence margin, on run folders with known per-seed numbers; repeated seeds."""

import math
import os

import pandas as pd
import pytest
from scipy import stats

from analysis import ablation_table, collect_runs, notes, render
from analysis.__main__ import main
from analysis.stats import compare

BASE = {0: 80.0, 1: 81.0, 2: 79.5, 3: 80.5, 4: 80.2}
# label: per-seed difference to the baseline
ROWS = {
    "same": [0.0, 0.05, -0.05, 0.02, -0.02],  # Δ 0, tiny spread: equivalent within ±0.5
    "up": [1.0, 1.05, 0.95, 1.02, 0.98],  # Δ +1: better
    "down": [-1.0, -1.05, -0.95, -1.02, -0.98],  # Δ -1: worse
    "noisy": [0.5, -0.6, 0.9, -0.4, 0.1],  # Δ +0.1, sd 0.6: undecided
}


@pytest.fixture
def four(tmp_path, make_run):
    job = 0
    for seed, top1 in BASE.items():
        make_run(tmp_path / "s" / str(job), [f"seed={seed}"], {"status": "completed", "top1": top1, "seed": seed,
                 "label": "baseline", "paper_top1": 77.0, "gmacs": 0.00505})  # fmt: skip
        job += 1
    papers = {"same": 77.0, "up": 77.5, "down": 76.0, "noisy": 77.3}
    for label, diffs in ROWS.items():
        for seed, d in zip(BASE, diffs, strict=True):
            results = {"status": "completed", "top1": BASE[seed] + d, "seed": seed, "label": label,
                       "paper_top1": papers[label], "gmacs": 0.00707}  # fmt: skip
            make_run(tmp_path / "s" / str(job), [f"seed={seed}", f"row={label}"], results)
            job += 1
    return tmp_path / "s"


def test_each_row_gets_its_outcome_and_the_interval_agrees(four):
    table = ablation_table(collect_runs([four])).set_index("label")
    assert table.attrs["tests"] == 4 and table.attrs["level"] == pytest.approx(1 - 0.05 / 4)
    assert table.loc[["same", "up", "down", "noisy"], "outcome"].tolist() == [
        "equivalent",
        "better",
        "worse",
        "undecided",
    ]
    critical = stats.t.ppf(1 - 0.05 / 8, 4)  # two-sided at 0.05/4, 4 df
    for label, diffs in ROWS.items():
        d = pd.Series(diffs)
        half = critical * d.std(ddof=1) / math.sqrt(5)
        low, high = table.loc[label, ["delta_ci_low", "delta_ci_high"]]
        assert (low, high) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-9), label
    same, up, down = table.loc["same"], table.loc["up"], table.loc["down"]
    assert same["delta_ci_low"] > -0.5 and same["delta_ci_high"] < 0.5
    assert up["delta_ci_low"] > 0 and down["delta_ci_high"] < 0
    # the equivalent row's adjusted TOST p is below 5%, the others' are not
    assert same["p_equivalence_adj"] < 0.05 < table.loc["noisy", "p_equivalence_adj"]
    # paper Δ: same 0.0 -> equivalent agrees; up +0.5 -> agrees; down -1.0 -> agrees; noisy -> not resolved
    assert table.loc[["same", "up", "down", "noisy"], "verdict"].tolist() == [
        "agrees",
        "agrees",
        "agrees",
        "not resolved",
    ]


def test_tost_p_is_two_one_sided_t_tests_of_the_paired_differences():
    base = pd.Series(BASE)
    row = base + pd.Series(ROWS["noisy"], index=list(BASE))
    c = compare(row, base)
    diffs = (row - base).to_numpy()
    lower = stats.ttest_1samp(diffs, -0.5, alternative="greater").pvalue
    upper = stats.ttest_1samp(diffs, 0.5, alternative="less").pvalue
    assert c.p_equivalence(0.5) == pytest.approx(max(lower, upper))


def test_a_margin_of_zero_decides_no_equivalence(four):
    table = ablation_table(collect_runs([four]), margin=0.0).set_index("label")
    assert table.loc["same", "outcome"] == "undecided"
    assert table.loc["up", "outcome"] == "better"


def test_a_wide_margin_marks_a_sure_small_difference_as_within_it(four):
    table = ablation_table(collect_runs([four]), margin=2.0)
    up = table.set_index("label").loc["up"]
    assert up["outcome"] == "better" and up["within_margin"]
    assert "better (within ±2)" in render(table, "markdown")


def test_outcomes_in_markdown_csv_and_summary(four, capsys):
    assert main([str(four), "--format", "csv"]) == 0
    back = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert back["outcome"].tolist()[1:] == ["equivalent", "better", "worse", "undecided"]
    assert main([str(four)]) == 0
    text = capsys.readouterr().out
    assert "equivalent (±0.5)" in text and "| better" in text and "| worse" in text
    assert (
        "Of 4 rows tested against the baseline (family-wise error 5%, Bonferroni): 1 better (up (+1.00)), "
        "1 worse (down (-1.00)), 1 equivalent within ±0.5 (same (+0.00)) and 1 undecided." in text
    )
    assert "each row's t-interval at 98.75% = 1 - 0.05/4" in text
    assert "0.00505" in text
    assert "0.00707" in text  # 3 significant digits, not 0.01 for both


@pytest.mark.parametrize("command", [[], ["replay"], ["simulate", "--sd", "0.3"]])
def test_a_negative_margin_is_one_line_and_exit_2(four, capsys, command):
    args = [*command, *([] if command[1:] else [str(four)]), "--margin", "-0.5"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: margin -0.5 must be 0 or more (points of top-1); e.g. --margin 0.5\n"


def test_a_repeated_seed_counts_once_and_the_newest_run_is_kept(tmp_path, make_run):
    runs = [("baseline", 0, 80.0), ("baseline", 1, 81.0), ("baseline", 2, 80.5),
            ("x", 0, 81.0), ("x", 1, 82.0), ("x", 1, 82.0), ("x", 2, 81.6)]  # fmt: skip
    for job, (label, seed, top1) in enumerate(runs):
        folder = make_run(tmp_path / "s" / str(job), [f"seed={seed}", *([] if label == "baseline" else ["x=1"])],
                          {"status": "completed", "top1": top1, "seed": seed, "label": label})  # fmt: skip
        os.utime(folder / "results.json", (1_000_000 + job, 1_000_000 + job))
    # the newer run of seed 1 is job 4 (job 5 is made older): job 4 is kept
    os.utime(tmp_path / "s" / "5" / "results.json", (999_000, 999_000))
    collected = collect_runs([tmp_path / "s"])
    dropped = collected[collected["duplicate_of"].notna()]
    assert dropped["folder"].tolist() == [str(tmp_path / "s" / "5")]
    assert dropped["duplicate_of"].tolist() == [str(tmp_path / "s" / "4")]
    assert not dropped["usable"].any() and (dropped["status"] == "completed").all()
    table = ablation_table(collected).set_index("label")
    x = table.loc["x"]
    assert x["n"] == 3 and x["n_pairs"] == 3 and x["test"] == "paired t"  # not n=4, not Welch
    assert x["delta_vs_baseline"] == pytest.approx((1.0 + 1.0 + 1.1) / 3)
    text = notes(table.reset_index())
    assert (
        "1 repeated run left out" in text
        and f"{tmp_path / 's' / '5'} left out, {tmp_path / 's' / '4'} kept" in text
    )


def test_the_same_command_twice_is_not_n_2(tmp_path, make_run):
    for job in range(2):
        make_run(tmp_path / "s" / str(job), ["seed=0"], {"status": "completed", "top1": 80.0, "seed": 0})
    table = ablation_table(collect_runs([tmp_path / "s"]))
    assert table["n"].tolist() == [1]
    assert math.isnan(table.loc[0, "top1_ci_low"])  # one observation: no (zero-width) interval


def test_repeated_seeds_in_a_csv_keep_the_last_row(tmp_path):
    csv = tmp_path / "runs.csv"
    pd.DataFrame({"label": ["baseline", "baseline", "baseline"], "seed": [0, 0, 1], "top1": [80.0, 70.0, 81.0],
                  "status": "completed"}).to_csv(csv, index=False)  # fmt: skip
    table = ablation_table(collect_runs([csv]))
    assert table.loc[0, "n"] == 2 and table.loc[0, "top1_mean"] == pytest.approx(75.5)
