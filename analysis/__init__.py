"""Analysis of run folders: pandas DataFrames of runs, ablation tables (markdown, LaTeX, CSV) and PNG plots.

The last stage of the flow (docs/run-folder.md): it reads what training wrote (`.hydra/`, `results.json`, `metrics.csv`)
and imports nothing from `metaformer`, `mixers` or torch, so it runs wherever pandas and matplotlib do.

    runs = collect_runs(["multirun/2026-11-25/10-00-00"])
    table = ablation_table(runs)              # or baseline="LN"; a DataFrame: CIs, tests, Holm p, verdicts
    print(render(table, "markdown"))
    write_report(runs, table, "report/")      # or: python -m analysis multirun/... --out report/
"""

from analysis.collect import AnalysisError, collect_runs, find_run_dirs, read_run
from analysis.plots import plot_delta_vs_baseline, plot_delta_vs_paper, plot_top1_vs_gmacs
from analysis.report import write_report
from analysis.table import ablation_table, excluded_runs, notes, render, render_excluded, summary

__all__ = [
    "AnalysisError",
    "ablation_table",
    "collect_runs",
    "excluded_runs",
    "find_run_dirs",
    "plot_delta_vs_baseline",
    "plot_delta_vs_paper",
    "plot_top1_vs_gmacs",
    "notes",
    "read_run",
    "render",
    "render_excluded",
    "summary",
    "write_report",
]
