"""The plots: written as PNGs on tables with collapsed rows, single seeds and paper numbers; the axis clipping."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis import (
    AnalysisError,
    ablation_table,
    collect_runs,
    plot_delta_vs_baseline,
    plot_delta_vs_paper,
    plot_top1_vs_gmacs,
)
from analysis.plots import on_scale

ROOT = Path(__file__).resolve().parents[2]


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_one_collapsed_row_goes_off_scale_and_the_rest_stay():
    extents = np.array([0.5, 1.2, 2.0, 0.8, 75.0, 4.1])  # a -72 point collapse among rows within a few points
    assert on_scale(extents).tolist() == [True, True, True, True, False, True]
    assert on_scale(np.array([1.0, 75.0])).tolist() == [True, False]  # two rows: the far one still goes


def test_rows_on_one_scale_are_all_kept():
    assert on_scale(np.array([0.5, 1.0, 1.5, 3.0, 5.0])).all()  # no gap of 4x
    assert on_scale(np.array([0.01, 0.05, 0.1])).all()  # a third at most goes: not 2 of 3
    assert on_scale(np.array([3.0, np.nan, 2.0])).tolist() == [True, True, True]


def test_plots_of_a_study_with_a_collapsed_row(study, tmp_path, make_run):
    for seed, top1 in enumerate([10.0, 10.0, 10.0]):  # no residual: chance on every seed, paper 0.1
        results = {
            "status": "completed",
            "top1": top1,
            "seed": seed,
            "paper_top1": 0.1,
            "gmacs": 1.8,
            "data": "d",
            "model": "m",
        }
        make_run(
            study / f"collapse{seed}",
            ["experiment=mini", "trainer.epochs=1", f"seed={seed}", "res=none"],
            results,
        )
    table = ablation_table(collect_runs([study]))
    collapsed = table.set_index("label").loc["res=none"]
    assert collapsed["delta_vs_baseline"] == pytest.approx(-61.0) and collapsed["verdict"] == "agrees"
    for plot, name in (
        (plot_delta_vs_baseline, "delta.png"),
        (plot_delta_vs_paper, "paper.png"),
        (plot_top1_vs_gmacs, "macs.png"),
    ):
        assert is_png(plot(table, tmp_path / name)), name


def test_paper_plot_needs_paper_numbers(tmp_path, make_run):
    for seed, (override, top1) in enumerate([("", 70.0), ("", 71.0), ("norm=ln", 69.0), ("norm=ln", 70.5)]):
        make_run(tmp_path / "s" / str(seed), [f"seed={seed % 2}", *([override] if override else [])],
                 {"status": "completed", "top1": top1, "gmacs": 1.0})  # fmt: skip
    table = ablation_table(collect_runs([tmp_path / "s"]))
    with pytest.raises(AnalysisError, match="paper"):
        plot_delta_vs_paper(table, tmp_path / "p.png")
    assert is_png(plot_delta_vs_baseline(table, tmp_path / "d.png"))


def test_analysis_imports_no_torch():
    # `python -m analysis` included: its start-up is the command's, and torch with timm would add seconds to it
    modules = (
        "analysis, analysis.__main__, analysis.plots, analysis.stats, analysis.sequential, analysis.front"
    )
    code = (
        f"import sys, {modules}; loaded = {{'torch', 'timm'}} & set(sys.modules); assert not loaded, loaded"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
