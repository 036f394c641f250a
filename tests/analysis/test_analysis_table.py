"""Grouping runs across seeds, the baseline delta, row order, rendering, and the list of excluded runs."""

import io
import math

import pandas as pd
import pytest

from analysis import AnalysisError, ablation_table, collect_runs, excluded_runs, render, render_excluded

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


def test_markdown_rendering(table):
    text = render(table, "markdown")
    lines = text.splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "label",
        "group",
        "n",
        "top-1 (mean ± std)",
        "Δ vs baseline",
        "paper top-1",
        "params (M)",
        "MACs (G)",
        "img/s",
    ]
    baseline = [c.strip() for c in lines[2].strip("|").split("|")]
    assert baseline == [
        "baseline",
        "baseline",
        "2",
        "71.00 ± 1.41",
        "(baseline)",
        "77.2",
        "11.9",
        "1.80",
        "100",
    ]
    ln = [c.strip() for c in lines[4].strip("|").split("|")]
    assert ln[:5] == ["LN", "norm", "1", "68.00", "-3.00"]  # n=1: the mean alone


def test_latex_rendering_escapes_and_uses_math(table):
    text = render(table, "latex")
    assert text.startswith("\\begin{tabular}")
    assert "71.00 $\\pm$ 1.41" in text
    assert "$\\Delta$ vs baseline" in text
    assert "±" not in text and "Δ" not in text


def test_csv_rendering_keeps_numbers(table):
    back = pd.read_csv(io.StringIO(render(table, "csv")))
    assert back["label"].tolist() == ORDER
    assert back["top1_mean"].tolist() == pytest.approx([71.0, 72.5, 68.0, 75.0, 66.0])
    assert back["delta_vs_baseline"].tolist() == pytest.approx([0.0, 1.5, -3.0, 4.0, -5.0])


def test_unknown_format():
    with pytest.raises(AnalysisError, match="markdown, latex, csv"):
        render(pd.DataFrame(), "html")


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
