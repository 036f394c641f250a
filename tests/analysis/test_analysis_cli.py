"""`python -m analysis` as a user runs it: printed tables, written files and plots, exit codes on bad input."""

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import ablation_table, collect_runs
from analysis.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_markdown_table_files_and_plots(multirun, tmp_path, capsys):
    out = tmp_path / "report"
    assert main([str(multirun), "--out", str(out), "--format", "markdown"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("Every run: `trainer.epochs=2`\n\n| label")
    assert "| baseline " in stdout and "71.00 [58.29, 83.71]" in stdout and "+1.50 [-4.85, +7.85]" in stdout
    assert "Of 1 row tested against the baseline (family-wise error 5%, Bonferroni): 0 better" in stdout
    assert "Runs not in the averages (4)" in stdout
    assert "diverged" in stdout and "incomplete" in stdout
    assert str(multirun / "2026-11-25" / "10-00-00" / "7") in stdout
    for name in ("ablation.md", "ablation.tex", "ablation.csv", "runs.csv"):
        assert (out / name).stat().st_size > 0, name
    assert is_png(out / "top1_vs_gmacs.png")
    assert is_png(out / "delta_vs_baseline.png")
    assert is_png(out / "delta_vs_paper.png")
    assert "Runs not in the averages" in (out / "ablation.md").read_text()
    assert "\\begin{tabular}" in (out / "ablation.tex").read_text()
    every_run = pd.read_csv(out / "runs.csv")
    assert len(every_run) == 11
    assert sorted(every_run["status"].unique()) == [
        "completed",
        "diverged",
        "failed",
        "incomplete",
        "preempted",
    ]
    assert pd.read_csv(out / "ablation.csv")["top1_mean"].tolist() == pytest.approx(
        [71.0, 72.5, 68.0, 75.0, 66.0]
    )


def test_runs_csv_reads_back_into_the_same_table(multirun, tmp_path, capsys):
    assert main([str(multirun), "--out", str(tmp_path / "r")]) == 0
    again = ablation_table(collect_runs([tmp_path / "r" / "runs.csv"]))
    first = ablation_table(collect_runs([multirun]))
    columns = [
        "label",
        "n",
        "top1_mean",
        "top1_std",
        "top1_ci_low",
        "delta_vs_baseline",
        "p_adj",
        "outcome",
        "params_m",
    ]
    pd.testing.assert_frame_equal(again[columns], first[columns], check_dtype=False)


def test_latex_format(multirun, capsys):
    assert main([str(multirun), "--format", "latex"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("% every run: trainer.epochs=2\n\\begin{tabular}")
    assert "\\end{tabular}" in stdout
    assert "\n% Runs not in the averages (4)" in stdout


def test_csv_format_is_clean_csv_on_stdout(multirun, capsys):
    assert main([str(multirun), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    table = pd.read_csv(io.StringIO(captured.out))
    assert table["n"].tolist() == [2, 2, 1, 1, 1]
    assert table["test"].tolist()[1:] == ["paired t", "none (n=1)", "none (n=1)", "none (n=1)"]
    assert table["p_adj"][1] == pytest.approx(
        1 - 2 * math.atan(3) / math.pi, rel=1e-5
    )  # t = 3, 1 df: Cauchy; one row tested, so Bonferroni multiplies by 1
    assert table["outcome"].tolist()[1:] == ["undecided"] * 4
    assert "# Runs not in the averages (4)" in captured.err
    excluded = pd.read_csv(io.StringIO(captured.err), comment="#")  # the list is CSV too, same columns
    assert sorted(excluded["status"]) == ["diverged", "failed", "incomplete", "preempted"]
    assert {"reason", "diverged_epoch", "signal", "folder"} <= set(excluded.columns)


def test_html_format(multirun, capsys):
    assert main([str(multirun), "--format", "html"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("<p>Every run: <code>trainer.epochs=2</code></p>")
    assert "<table" in stdout and "Runs not in the averages (4)" in stdout


def test_study_markdown_names_tests_and_verdicts(study, capsys):
    assert main([str(study)]) == 0
    stdout = capsys.readouterr().out
    for word in ("paired t (3)", "Welch t", "none (n=1)", "agrees", "opposite", "not resolved"):
        assert word in stdout, word
    assert "epoch 2, batch 17" in stdout and "SIGTERM" in stdout and "RuntimeError: out of memory" in stdout


def test_baseline_option(multirun, capsys):
    assert main([str(multirun), "--baseline", "ReLU", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert table["label"][0] == "ReLU"
    assert table.set_index("label").loc["baseline", "delta_vs_baseline"] == pytest.approx(5.0)


def test_unknown_baseline_exits_2_listing_labels(multirun, capsys):
    assert main([str(multirun), "--baseline", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "'nope'" in captured.err
    assert all(f"'{label}'" in captured.err for label in ("baseline", "pool size 5", "LN", "ReLU"))


def test_missing_path_exits_2_with_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: ") and "missing: no such file or folder" in err


def test_folder_without_runs_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "holds no runs" in capsys.readouterr().err


def test_without_baseline_no_delta_plot_and_the_note_once(multirun, tmp_path, capsys):
    only_ln = multirun / "2026-11-25" / "10-00-00" / "4"
    assert main([str(only_ln), "--out", str(tmp_path / "r")]) == 0
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("--baseline LABEL") == 1  # the summary says it; no second note
    assert "no baseline row, so no comparison (pass --baseline LABEL)" in captured.out
    assert main([str(only_ln), "--format", "csv"]) == 0  # bare CSV has no summary: the note goes to stderr
    captured = capsys.readouterr()
    assert captured.err.count("--baseline LABEL") == 1 and "--baseline" not in captured.out
    assert is_png(tmp_path / "r" / "top1_vs_gmacs.png")
    assert not (tmp_path / "r" / "delta_vs_baseline.png").exists()


def test_python_dash_m_analysis(multirun):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "analysis", str(multirun)], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "| baseline " in done.stdout


def test_missing_path_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["no/such/dir"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: no/such/dir: no such file or folder; give a run folder, a multirun folder or a runs CSV"
    )


def test_runs_csv_of_a_clean_sweep_reads_back(tmp_path, capsys, make_run):
    """All runs completed: runs.csv's `problem` column is empty, which pandas reads as float."""
    for job, (seed, top1) in enumerate([(0, 80.0), (1, 82.0)]):
        results = {
            "status": "completed",
            "top1": top1,
            "seed": seed,
            "label": "baseline",
            "data": "d",
            "model": "m",
        }
        make_run(tmp_path / "sweep" / str(job), [f"seed={seed}"], results)
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert main([str(tmp_path / "r" / "runs.csv")]) == 0
    assert "81.00 [68.29, 93.71]" in capsys.readouterr().out
