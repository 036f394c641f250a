"""`python -m analysis PATH [PATH ...]`: print the ablation table of the runs under PATH, optionally write files.

`python -m analysis replay PATH ...` replays the sequential rule (analysis.sequential) on a recorded study and
`python -m analysis simulate [PATH ...]` measures its error and power on drawn numbers (analysis.simulate);
`python -m analysis front SWEEP` prints the Pareto front of a search and plots it (analysis.front); a first
argument naming an existing file or folder is always a PATH.

Reading, grouping and rendering live in `collect`, `table`, `plots` and `report`; this module only parses the
command line, prints, and turns input errors into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.collect import AnalysisError, collect_runs
from analysis.report import write_report
from analysis.stats import DEFAULT_MARGIN
from analysis.table import DEFAULT_BASELINES, FORMATS, ablation_table, render, render_excluded


def report(error: BaseException | str, prog: str = "") -> None:
    """Print `prog: error: message` (or `error: message`) on stderr, on one line. The training side's
    metaformer.errors does the same, but this package stays torch-free, and `import metaformer` loads torch."""
    args = error.args if isinstance(error, BaseException) else (error,)
    text = args[0] if len(args) == 1 and isinstance(args[0], str) else str(error)
    print(
        f"{prog}: error: " if prog else "error: ", " ".join(text.split()), sep="", file=sys.stderr, flush=True
    )


def run_main(argv: list[str] | None = None) -> int:
    """`main`, with bad input (ValueError, KeyError) as one line and exit 2, the environment (OSError) exit 1."""
    try:
        return main(argv) or 0
    except (ValueError, KeyError, OSError) as e:
        report(e, prog="python -m analysis")
        return 1 if isinstance(e, OSError) else 2


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
    _margin_option(parser)
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="also write ablation.{md,tex,csv}, runs.csv and the PNG plots (top-1 vs MACs, Δ vs baseline, "
        "Δ vs the paper's Δ) into DIR",
    )
    return parser


MARGIN_HELP = (
    "equivalence margin in points of top-1 (default {default:g}): a row whose adjusted interval lies inside "
    "±margin is 'equivalent'. {default:g} is about one configuration's seed-to-seed spread in the recorded studies "
    "(0.2-0.6) and below the smallest changes the MetaFormer paper reports (0.1-0.8 points count as changes "
    "there); 0 turns equivalence off"
)


def _margin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        metavar="POINTS",
        help=MARGIN_HELP.format(default=DEFAULT_MARGIN),
    )


def _design_options(parser: argparse.ArgumentParser) -> None:
    from analysis.sequential import SPENDING, Design

    _margin_option(parser)
    parser.add_argument(
        "--alpha", type=float, default=Design.alpha, help=f"family-wise error (default {Design.alpha:g})"
    )
    parser.add_argument(
        "--looks", type=int, default=Design.max_looks, help=f"most looks per row (default {Design.max_looks})"
    )
    parser.add_argument(
        "--first",
        type=int,
        default=Design.first,
        help=f"paired seeds at the first look (default {Design.first})",
    )
    parser.add_argument(
        "--step", type=int, default=Design.step, help=f"seeds added per look (default {Design.step})"
    )
    parser.add_argument(
        "--spending",
        choices=SPENDING,
        default=Design.spending,
        help=f"alpha over looks: pocock (equal shares) or obf (O'Brien-Fleming-like: little early, most at the "
        f"last look) (default {Design.spending})",
    )
    parser.add_argument(
        "--futility",
        type=float,
        default=Design.futility,
        help="stop a row whose chance to be decided by the last look is below this "
        f"(default {Design.futility:g}; 0: never)",
    )


def _design(args: argparse.Namespace):
    from analysis.sequential import Design

    return Design(
        margin=args.margin,
        alpha=args.alpha,
        max_looks=args.looks,
        first=args.first,
        step=args.step,
        spending=args.spending,
        futility=args.futility,
    )


def build_replay_parser() -> argparse.ArgumentParser:
    """Return the parser of `python -m analysis replay`."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis replay",
        description="Replay the sequential rule on a recorded study (seeds taken in ascending order): when each "
        "row would have stopped, with which outcome, and how many runs it would have used against the fixed grid.",
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="run folders, multirun folders or a runs CSV"
    )
    parser.add_argument(
        "--baseline", default="baseline", metavar="LABEL", help="the baseline row (default: baseline)"
    )
    _design_options(parser)
    return parser


def build_simulate_parser() -> argparse.ArgumentParser:
    """Return the parser of `python -m analysis simulate`."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis simulate",
        description="Measure the sequential rule's family-wise error (no effect; the equivalence boundary) and its "
        "power (Δ = --effect) on numbers drawn with the spreads of a recorded study (or --sd), no training.",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="a recorded study for the spreads")
    parser.add_argument(
        "--baseline", default="baseline", metavar="LABEL", help="the baseline row (default: baseline)"
    )
    parser.add_argument(
        "--sd", type=float, help="one spread of the paired differences for every row, instead"
    )
    parser.add_argument("--rows", type=int, default=22, help="rows with --sd (default 22)")
    parser.add_argument(
        "--studies", type=int, default=1000, help="simulated studies per scenario (default 1000)"
    )
    parser.add_argument("--effect", type=float, default=1.0, help="Δ of the power scenario (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--max-runs",
        type=int,
        metavar="RUNS",
        help="a study's budget, as hydra.sweeper.max_runs: it stops before a look that would exceed it",
    )
    _design_options(parser)
    return parser


def replay_main(argv: list[str]) -> int:
    """`python -m analysis replay`: print the replay table and the run counts."""
    from analysis.sequential import render_replay, replay

    args = build_replay_parser().parse_args(argv)
    try:
        design = _design(args)
        runs = collect_runs(args.paths)
        replayed = replay(runs, baseline=args.baseline, design=design)
    except AnalysisError as e:
        report(e, prog="")
        return 2
    print(render_replay(replayed))
    return 0


def simulate_main(argv: list[str]) -> int:
    """`python -m analysis simulate`: print the error and power of the sequential rule and of the fixed grid."""
    import numpy as np

    from analysis.sequential import Design
    from analysis.simulate import recorded_rows, render_simulation, simulate

    args = build_simulate_parser().parse_args(argv)
    try:
        design = _design(args)
        if args.studies < 1:
            raise AnalysisError(f"--studies {args.studies} must be at least 1")
        if args.max_runs is not None and args.max_runs < 1:
            raise AnalysisError(f"--max-runs {args.max_runs} must be at least 1")
        recorded = None
        if args.sd is not None:
            if not args.sd > 0 or args.rows < 1:
                raise AnalysisError("--sd must be above 0 and --rows at least 1")
            spreads = np.full(args.rows, args.sd)
        elif args.paths:
            recorded, spreads = recorded_rows(collect_runs(args.paths), args.baseline, design.cap)
            if not np.isfinite(spreads).all():
                raise AnalysisError("a row has fewer than two paired seeds: no spread to take; pass --sd")
        else:
            raise AnalysisError("give a recorded study (PATH) for the spreads, or --sd POINTS")
    except AnalysisError as e:
        report(e, prog="")
        return 2
    print("Sequential rule:\n")
    print(
        render_simulation(
            simulate(spreads, design, args.studies, args.effect, args.seed, recorded, args.max_runs),
            spreads,
            design,
            args.studies,
        )
    )
    fixed = Design(margin=design.margin, alpha=design.alpha, max_looks=1, first=design.cap, futility=0.0)
    print(f"\nFixed grid ({design.cap} seeds every row, one look), for reference:\n")
    print(
        render_simulation(
            simulate(spreads, fixed, args.studies, args.effect, args.seed, recorded),
            spreads,
            fixed,
            args.studies,
        )
    )
    return 0


def build_front_parser() -> argparse.ArgumentParser:
    """Return the parser of `python -m analysis front`."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis front",
        description="The Pareto front (top-1 up, MACs down) of a search (python run.py -m +search=NAME): a table "
        "of its members, and a plot of every trial with the front and the hand-made hybrids marked.",
    )
    parser.add_argument("sweep", metavar="SWEEP", help="the search's sweep folder (it holds search.json)")
    parser.add_argument(
        "--out", metavar="DIR", help="where front.png (and confirm_rows.yaml) go (default: SWEEP)"
    )
    parser.add_argument(
        "--confirm",
        action="store_true",
        help="also write confirm_rows.yaml (the baseline and the front's members) and print the adaptive study "
        "that re-trains them with more seeds and decides each against the baseline (paired by seed), and the "
        "command for its table",
    )
    parser.add_argument(
        "--against",
        metavar="SWEEP",
        action="append",
        default=[],
        help="another search of the same space (e.g. the random-sampler control; repeatable): print each one's "
        "hypervolume after its trials against one shared reference point and write hypervolume.png",
    )
    return parser


def front_main(argv: list[str]) -> int:
    """`python -m analysis front`: print the front's table, write front.png, optionally the confirmation study."""
    from analysis import front as fr

    args = build_front_parser().parse_args(argv)
    out = Path(args.out or args.sweep)
    try:
        front = fr.search_front(args.sweep)
        print(fr.render_front(front))
        fronts = {args.sweep: front, **{other: fr.search_front(other) for other in args.against}}
        history = fr.hypervolumes(fronts) if args.against else None
        rows = fr.write_confirm_rows(front, out / "confirm_rows.yaml") if args.confirm else None
    except AnalysisError as e:
        report(e, prog="")
        return 2
    except OSError as e:
        report(f"cannot write to {out}: {e}", prog="")
        return 1
    try:
        written = [fr.plot_front(front, out / "front.png")]
        if history is not None:
            written.append(fr.plot_hypervolumes(history, out / "hypervolume.png"))
    except OSError as e:
        report(f"cannot write to {out}: {e}", prog="")
        return 1
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    if history is not None:
        print("\nHypervolume of each search (the same space and budget):\n")
        print(fr.render_hypervolumes(history, fronts))
    if rows is not None:
        print(
            "\nRe-train the front with more seeds and decide each member against the baseline (adaptive study):"
        )
        print("\n".join(fr.confirm_command(front, rows.resolve())))
    return 0


COMMANDS = {"replay": replay_main, "simulate": simulate_main, "front": front_main}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 cannot write --out, 2 bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS and not Path(argv[0]).exists():
        return COMMANDS[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    try:
        runs = collect_runs(args.paths)
        table = ablation_table(runs, baseline=args.baseline, margin=args.margin)
    except AnalysisError as e:
        report(e, prog="")
        return 2
    print(render(table, args.format).rstrip())
    if excluded := render_excluded(runs, args.format):
        # CSV on stdout stays machine-readable: the list (CSV too, under a "# " title) goes to stderr.
        print("\n" + excluded, file=sys.stderr if args.format == "csv" else sys.stdout)
    if not table["is_baseline"].any() and args.format == "csv":
        # The markdown, LaTeX and HTML output say it in their summary; bare CSV has no summary to say it in.
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
    sys.exit(run_main())
