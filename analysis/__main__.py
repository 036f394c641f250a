"""`python -m analysis PATH [PATH ...]`: print the ablation table of the runs under PATH, optionally write files.

Reading, grouping and rendering live in `collect`, `table`, `plots` and `report`; this module only parses the
command line, prints, and turns input errors into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from analysis.collect import AnalysisError, collect_runs
from analysis.report import write_report
from analysis.table import DEFAULT_BASELINES, FORMATS, ablation_table, render, render_excluded
from metaformer.errors import report, run_main


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of `python -m analysis`."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Ablation table of Hydra run folders: top-1 with 95% CI over seeds, Δ vs baseline with CI "
        "(paired by seed, else Welch), Holm-corrected p, verdict against the paper, cost; plots with --out.",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a run folder, a multirun folder (searched recursively) or a runs CSV",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="markdown", help="what to print (default: markdown)"
    )
    parser.add_argument(
        "--baseline",
        metavar="LABEL",
        help="the row to compare against, by label or ablation name (default: 'baseline', else 'default', else none)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="also write ablation.{md,tex,csv}, runs.csv and the PNG plots (top-1 vs MACs, Δ vs baseline, "
        "Δ vs the paper's Δ) into DIR",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 cannot write --out, 2 bad input)."""
    args = build_parser().parse_args(argv)
    try:
        runs = collect_runs(args.paths)
        table = ablation_table(runs, baseline=args.baseline)
    except AnalysisError as e:
        report(e, prog="")
        return 2
    print(render(table, args.format).rstrip())
    if excluded := render_excluded(runs, args.format):
        # CSV on stdout stays machine-readable: the list (CSV too, under a "# " title) goes to stderr.
        print("\n" + excluded, file=sys.stderr if args.format == "csv" else sys.stdout)
    if not table["is_baseline"].any():
        print(
            f"note: no row labelled {' or '.join(map(repr, DEFAULT_BASELINES))}: no Δ column; "
            "pass --baseline LABEL to compare against a row",
            file=sys.stderr,
        )
    if args.out:
        try:
            written = write_report(runs, table, args.out)
        except OSError as e:
            report(f"cannot write to {args.out}: {e}", prog="")
            return 1
        print(f"wrote {', '.join(p.name for p in written)} to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "python -m analysis"))
