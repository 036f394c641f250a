"""Grouping runs across seeds, the statistics against the baseline, row order, rendering, excluded runs."""

import io
import math
import re

import pandas as pd
import pytest

from analysis import AnalysisError, ablation_table, collect_runs, excluded_runs, render, render_excluded
from analysis.stats import seeds_needed, seeds_needed_equivalence

ORDER = ["baseline", "pool size 5", "LN", "[pool, pool, attn, attn]", "ReLU"]


@pytest.fixture
def runs(multirun):
    return collect_runs([multirun])


@pytest.fixture
def table(runs):
    return ablation_table(runs)


def test_mean_std_n_over_completed_seeds_only(table):
    rows = table.set_index("label")
    assert rows.loc["baseline", "n"] == 2
    assert rows.loc["baseline", "top1_mean"] == pytest.approx(71.0)
    assert rows.loc["baseline", "top1_std"] == pytest.approx(math.sqrt(2))
    # seed 2 was preempted at 50.0: averaging it in would give 65.0
    assert rows.loc["pool size 5", "n"] == 2
    assert rows.loc["pool size 5", "top1_mean"] == pytest.approx(72.5)
    assert rows.loc["pool size 5", "top1_std"] == pytest.approx(2.1213203)
    assert rows.loc["pool size 5", "n_excluded"] == 1
    # the diverged seed (10.0) is not averaged in: n=1, no std
    assert rows.loc["LN", "n"] == 1
    assert rows.loc["LN", "top1_mean"] == pytest.approx(68.0)
    assert math.isnan(rows.loc["LN", "top1_std"])
    assert rows.loc["[pool, pool, attn, attn]", "n"] == 1
    assert rows.loc["[pool, pool, attn, attn]", "n_excluded"] == 2
    assert rows.loc["ReLU", "seeds"] == "0"
    assert rows.loc["baseline", "seeds"] == "0,1"
    assert rows.loc["baseline", "img_per_s"] == pytest.approx(100.5)
    assert rows.loc["[pool, pool, attn, attn]", "params_m"] == pytest.approx(16.5)
    assert rows.loc["[pool, pool, attn, attn]", "paper_top1"] == pytest.approx(81.0)


def test_delta_to_baseline(table):
    deltas = table.set_index("label")["delta_vs_baseline"]
    assert deltas.to_dict() == pytest.approx(
        {"baseline": 0.0, "pool size 5": 1.5, "LN": -3.0, "[pool, pool, attn, attn]": 4.0, "ReLU": -5.0}
    )
    assert table["is_baseline"].tolist() == [True, False, False, False, False]


def test_rows_baseline_first_then_groups_in_sweep_order(table):
    assert table["label"].tolist() == ORDER


def test_baseline_by_label_or_ablation_name(runs):
    by_label = ablation_table(runs, baseline="LN")
    assert by_label["label"].tolist()[0] == "LN"
    assert by_label.set_index("label").loc["pool size 5", "delta_vs_baseline"] == pytest.approx(4.5)
    by_name = ablation_table(runs, baseline="norm_ln")
    assert by_name["delta_vs_baseline"].tolist() == pytest.approx(by_label["delta_vs_baseline"].tolist())


def test_unknown_baseline_lists_the_labels(runs):
    with pytest.raises(AnalysisError, match="'LX' is neither a row label nor an ablation name") as error:
        ablation_table(runs, baseline="LX")
    listed = str(error.value).split("labels: ")[1]
    assert sorted(listed.strip("'").split("', '")) == sorted(ORDER)


def test_no_baseline_row_means_no_deltas(runs):
    table = ablation_table(runs[runs["config"] != "baseline"])
    assert table["delta_vs_baseline"].isna().all()
    assert "Δ" not in render(table, "markdown")


def test_same_label_on_other_data_is_another_row_compared_to_its_own_baseline(tmp_path, make_run):
    for i, (data, top1) in enumerate([("fmnist", 80.0), ("fmnist", 82.0), ("cifar10", 60.0)]):
        make_run(tmp_path / str(i), [f"seed={i}"], {"status": "completed", "top1": top1, "data": data})
    for i, (data, top1) in enumerate([("fmnist", 79.0), ("cifar10", 63.0)], start=3):
        make_run(
            tmp_path / str(i), ["norm=ln", f"seed={i}"], {"status": "completed", "top1": top1, "data": data}
        )
    table = ablation_table(collect_runs([tmp_path]))
    assert table[["label", "data", "n"]].values.tolist() == [
        ["default", "fmnist", 2],
        ["norm=ln", "fmnist", 1],
        ["default", "cifar10", 1],
        ["norm=ln", "cifar10", 1],
    ]
    assert table["delta_vs_baseline"].tolist() == pytest.approx([0.0, -2.0, 0.0, 3.0])
    header = render(table, "markdown").splitlines()[0]
    assert "| data " in header and "model" not in header  # data varies, model does not


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def test_markdown_rendering(table):
    text = render(table, "markdown")
    lines = text.splitlines()
    assert lines[0] == "Every run: `trainer.epochs=2`"  # shared by every run: not in the labels
    assert cells(lines[2]) == [
        "label",
        "group",
        "n",
        "top-1 [95% CI]",
        "Δ [adj. CI]",
        "test",
        "p (adj.)",
        "p equiv. (adj.)",
        "outcome",
        "paper Δ",
        "verdict",
        "seeds to decide (est.)",
        "params (M)",
        "MACs (G)",
        "img/s",
    ]
    baseline = cells(lines[4])
    # 70 and 72: t-interval 71 ± 12.706 * sqrt(2) / sqrt(2)
    assert baseline[:5] == ["baseline", "baseline", "2", "71.00 [58.29, 83.71]", "(baseline)"]
    assert baseline[-3:] == ["11.9", "1.80", "100"]
    pool = cells(lines[5])  # seeds 0, 1 of both: paired, differences 1 and 2; one row tested: level 95%
    assert pool[:10] == [
        "pool size 5",
        "pool size",
        "2",
        "72.50 [53.44, 91.56]",
        "+1.50 [-4.85, +7.85]",
        "paired t (2)",
        "0.205",
        "1.000",
        "undecided",
        "0.0",
    ]
    ln = cells(lines[6])
    assert ln[:6] == ["LN", "norm", "1", "68.00 (n=1: no CI)", "-3.00 (no CI)", "none (n=1)"]
    assert "each row's t-interval at 95% = 1 - 0.05/1 (1 row tested)" in text


def test_latex_rendering_escapes_and_uses_math(table):
    text = render(table, "latex")
    assert "71.00 [58.29, 83.71]" in text
    assert "$\\Delta$ [adj. CI]" in text
    tabular = text[text.index("\\begin{tabular}") : text.index("\\end{tabular}")]
    assert "±" not in tabular and "Δ" not in tabular and "≈" not in tabular
    assert text.startswith("% every run: trainer.epochs=2\n\\begin{tabular}")
    assert "\n% top-1: mean over seeds" in text  # the notes and the summary as comments


def test_csv_rendering_keeps_numbers(table):
    back = pd.read_csv(io.StringIO(render(table, "csv")))
    assert back["label"].tolist() == ORDER
    assert back["top1_mean"].tolist() == pytest.approx([71.0, 72.5, 68.0, 75.0, 66.0])
    assert back["delta_vs_baseline"].tolist() == pytest.approx([0.0, 1.5, -3.0, 4.0, -5.0])


def test_html_rendering(table):
    text = render(table, "html")
    assert text.startswith("<p>Every run: <code>trainer.epochs=2</code></p>")
    assert "<table" in text and "<td>(baseline)</td>" in text
    assert "<p>top-1: mean over seeds" in text and "<p>Of 1 row tested against the baseline" in text
    assert "|Δ| &gt;= 0.5" in text  # escaped


def test_unknown_format():
    with pytest.raises(AnalysisError, match="markdown, latex, csv, html"):
        render(pd.DataFrame(), "xml")


def test_excluded_runs_are_listed_with_status_and_folder(runs):
    excluded = excluded_runs(runs)
    assert sorted(excluded["status"]) == ["diverged", "failed", "incomplete", "preempted"]
    assert sorted(f.rsplit("/", 1)[1] for f in excluded["folder"]) == ["5", "7", "8", "9"]
    text = render_excluded(runs, "markdown")
    assert "Runs not in the averages (4)" in text
    for folder in excluded["folder"]:
        assert folder in text
    latex = render_excluded(runs, "latex")
    assert all(line.startswith("% ") for line in latex.splitlines())
    assert render_excluded(runs[runs["usable"]], "markdown") == ""


def test_configuration_whose_runs_all_failed_keeps_a_row_with_n_0(tmp_path, make_run):
    make_run(tmp_path / "0", ["seed=0"], {"status": "completed", "top1": 70.0, "label": "baseline"})
    make_run(tmp_path / "1", ["seed=0", "norm=none"], {"status": "diverged", "top1": 0.1, "label": "no norm"})
    table = ablation_table(collect_runs([tmp_path]))
    assert table["label"].tolist() == ["baseline", "no norm"]
    assert table["n"].tolist() == [1, 0]
    assert math.isnan(table.loc[1, "delta_vs_baseline"])
    no_norm = [c.strip() for c in render(table, "markdown").splitlines()[3].strip("|").split("|")]
    assert no_norm[:4] == ["no norm", "0", "–", "–"]
    assert "No row could be tested against the baseline" in render(table, "markdown")


# The study fixture (conftest.py): a sweep with known numbers, 3 seeds a row.


@pytest.fixture
def study_table(study):
    return ablation_table(collect_runs([study]))


def row(table: pd.DataFrame, label: str) -> pd.Series:
    return table.set_index("label").loc[label]


def test_labels_show_only_what_differs_and_the_shared_overrides_go_in_a_header(study_table):
    assert study_table["label"].tolist() == [
        "default",
        "norm=bn",
        "act=relu",
        "mixer=attn",
        "norm=ln",
        "mixer=dwconv",
        "act=silu",
    ]
    assert study_table.attrs["shared_overrides"] == ["experiment=mini", "trainer.epochs=1"]
    assert render(study_table, "markdown").startswith("Every run: `experiment=mini trainer.epochs=1`\n")


T_995_DF2 = 9.924843  # t quantile at 0.995 (5 rows tested: each interval at 1 - 0.05/5 = 99%), 2 df
T_995_DF4 = 4.604095  # 4 df


def test_a_clearly_better_paired_row_agrees_with_the_paper(study_table):
    bn = row(study_table, "norm=bn")  # differences 3.0, 3.1, 2.9
    assert bn["test"] == "paired t" and bn["n_pairs"] == 3
    assert bn["delta_vs_baseline"] == pytest.approx(3.0)
    half = T_995_DF2 * 0.1 / math.sqrt(3)  # t(1 - 0.01/2, 2 df) * sd / sqrt(n): Bonferroni over 5 rows
    assert (bn["delta_ci_low"], bn["delta_ci_high"]) == pytest.approx((3 - half, 3 + half), abs=1e-5)
    assert bn["p_value"] < 0.001 and bn["p_adj"] == pytest.approx(5 * bn["p_value"])
    assert bn["outcome"] == "better" and not bn["within_margin"]
    assert bn["paper_delta"] == pytest.approx(0.8)  # 78.0 - 77.2
    assert bn["verdict"] == "agrees"
    assert math.isnan(bn["seeds_needed"])  # decided: nothing to estimate


def test_a_worse_row_against_the_papers_sign_is_opposite(study_table):
    relu = row(study_table, "act=relu")
    assert relu["delta_vs_baseline"] == pytest.approx(-2.0)  # the preempted seed 4 (50.0) is not in it
    assert relu["delta_ci_high"] < 0 and relu["outcome"] == "worse" and relu["verdict"] == "opposite"


def test_a_row_within_noise_is_undecided_and_gets_a_seeds_estimate(study_table):
    ln = row(study_table, "norm=ln")  # differences 0.5, -0.4, 0.8; the diverged seed 3 is left out
    assert ln["n"] == 3 and ln["n_excluded"] == 1
    assert ln["delta_vs_baseline"] == pytest.approx(0.3)
    assert ln["delta_ci_low"] < -0.5 and ln["delta_ci_high"] > 0.5  # neither a difference nor inside ±0.5
    assert ln["outcome"] == "undecided" and ln["verdict"] == "not resolved"
    # 5 rows are tested: the estimate is at the level every row is decided at, 0.05 / 5
    sd = math.sqrt(0.39)
    assert ln["seeds_needed"] == min(
        seeds_needed(0.3, sd, alpha=0.01), seeds_needed_equivalence(0.3, sd, 0.5, alpha=0.01)
    )
    assert ln["seeds_needed"] > 3


def test_rows_without_shared_seeds_fall_back_to_welch(study_table):
    dw = row(study_table, "mixer=dwconv")  # seeds 3, 4, 5 against 0, 1, 2
    assert dw["test"] == "Welch t" and dw["n_pairs"] == 0
    assert dw["delta_vs_baseline"] == pytest.approx(2.0)
    half = T_995_DF4 * math.sqrt(1 / 3 + 1 / 3)  # both sds 1: Welch's df = 4
    assert (dw["delta_ci_low"], dw["delta_ci_high"]) == pytest.approx((2 - half, 2 + half), abs=1e-5)
    assert dw["seeds_needed"] == seeds_needed(2.0, 1.0, sd_base=1.0, alpha=0.01)
    assert "Welch t" in render(study_table, "markdown")


def test_a_single_seed_has_no_ci_and_no_test_and_says_so(study_table):
    silu = row(study_table, "act=silu")
    assert silu["n"] == 1 and silu["delta_vs_baseline"] == pytest.approx(-2.0)
    assert silu["test"] == "none (n=1)" and silu["top1_ci_method"] == "none (n=1)"
    assert math.isnan(silu["top1_ci_low"]) and math.isnan(silu["p_value"]) and silu["outcome"] == "undecided"
    assert silu["verdict"] == "not resolved"
    line = next(x for x in render(study_table, "markdown").splitlines() if x.startswith("| act=silu"))
    assert "69.00 (n=1: no CI)" in line and "-2.00 (no CI)" in line and "none (n=1)" in line


def test_the_adjustment_turns_a_nominally_significant_row_undecided_and_its_interval_says_so(study_table):
    attn = row(study_table, "mixer=attn")  # differences 1, 1.5, 2: t = 3 sqrt(3) with 2 df
    t = 3 * math.sqrt(3)
    raw = 1 - t / math.sqrt(2 + t * t)
    assert attn["p_value"] == pytest.approx(raw) and raw < 0.05  # alone it would be a difference...
    assert attn["p_adj"] == pytest.approx(5 * raw) and attn["p_adj"] > 0.05  # ...not among 5 rows
    # the interval shown is the adjusted one: it includes 0, as the outcome says (the unadjusted 95% one does not)
    half = T_995_DF2 * 0.5 / math.sqrt(3)
    assert (attn["delta_ci_low"], attn["delta_ci_high"]) == pytest.approx((1.5 - half, 1.5 + half), abs=1e-5)
    assert attn["delta_ci_low"] < 0 < 1.5 - 4.302653 * 0.5 / math.sqrt(3)
    assert attn["outcome"] == "undecided" and attn["verdict"] == "not resolved"
    assert study_table["p_value"].notna().sum() == 5 and study_table.attrs["tests"] == 5


def test_interval_p_and_outcome_agree_on_every_row(study_table):
    for _, r in study_table[study_table["p_value"].notna()].iterrows():
        excludes_zero = r["delta_ci_low"] > 0 or r["delta_ci_high"] < 0
        inside = r["delta_ci_low"] > -0.5 and r["delta_ci_high"] < 0.5
        assert excludes_zero == (r["p_adj"] < 0.05) == (r["outcome"] in ("better", "worse")), r["label"]
        assert inside == (r["p_equivalence_adj"] < 0.05), r["label"]
        assert (r["outcome"] == "better") == (r["delta_ci_low"] > 0), r["label"]


def test_failed_runs_are_not_averaged(study_table):
    base = row(study_table, "default")
    assert base["n"] == 3 and base["top1_mean"] == pytest.approx(71.0) and base["n_excluded"] == 1
    assert base["seeds"] == "0,1,2"


def test_summary_is_generated_from_the_numbers(study_table):
    text = render(study_table, "markdown")
    assert (
        "Of 5 rows tested against the baseline (family-wise error 5%, Bonferroni): 1 better (norm=bn (+3.00)), "
        "1 worse (act=relu (-2.00)), 0 equivalent within ±0.5 and 3 undecided." in text
    )
    assert (
        "1 row could not be tested (one run or none, or the same difference on every seed): act=silu." in text
    )
    assert "Of the 6 rows with a paper number, 1 agrees with the paper (norm=bn), " in text
    assert "1 is opposite (act=relu: -2.00 where the paper has +0.9) and 4 are not resolved." in text
    assert re.search(r"deciding the 3 undecided rows would take a median of about \d+ seeds", text)


def test_excluded_runs_give_the_error_the_diverged_step_and_the_signal(study):
    runs = collect_runs([study])
    excluded = excluded_runs(runs).set_index("status")
    assert excluded.loc["failed", "reason"] == "RuntimeError: out of memory"
    diverged = excluded.loc["diverged"]
    assert (diverged["diverged_epoch"], diverged["diverged_batch"], diverged["diverged_step"]) == (2, 17, 117)
    assert "NaN/inf at step 117" in diverged["reason"]
    assert excluded.loc["preempted", "signal"] == "SIGTERM"
    text = render_excluded(runs, "markdown")
    header = cells(text.splitlines()[2])
    assert header[:6] == ["label", "seed", "status", "reason", "diverged at (epoch, batch)", "signal"]
    assert "epoch 2, batch 17" in text and "SIGTERM" in text and "RuntimeError: out of memory" in text
    as_csv = pd.read_csv(io.StringIO(render_excluded(runs, "csv")), comment="#")
    assert list(as_csv.columns) == [
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
    assert as_csv.set_index("status").loc["diverged", "diverged_step"] == 117
