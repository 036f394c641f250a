"""`hydra/sweeper=adaptive`: a whole ablation table in rounds of seeds, every row decided or the budget spent.

    python run.py -m hydra/sweeper=adaptive +experiment=mini '+ablation=glob(*)' hydra.sweep.dir=multirun/adaptive

The rows are the command's sweep (the product of its swept values: `+ablation=glob(*)` gives one row per file of
conf/ablation), or `hydra.sweeper.rows_file` (a YAML mapping of row name to its overrides); the row matching
`hydra.sweeper.baseline` is the baseline. The sweeper owns `seed`. Round 1 trains every row and the baseline
with seeds 0 .. first-1; after each round `analysis.sequential.decide` decides the rows (better, worse,
equivalent within ±margin, or undecided) with the group-sequential design of analysis/sequential.py (paired by
seed with the baseline; Bonferroni over the rows and the looks, `spending` over the looks; a non-binding futility
stop), and `next_seeds` says which rows need more seeds: only they (and the baseline, for seeds it has not run)
train in the next round. The study ends when every row is decided, futile or at its last look (`max_looks`, or
`max_seeds` seeds per row), or before a round that would take the study over `max_runs` runs.

Each run is an ordinary run folder, `<sweep dir>/<row>/seed_<k>`, which `python -m analysis <sweep dir>` reads;
the rounds and each row's decision go to `study.json`, `study.md` and `study.png` (the Δ plot with the rule's
intervals) there. The same command run again reads the folders, replays the decisions (they depend only on the
runs) and goes on: no finished run is trained again.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hydra_plugins.metaformer_sweepers.base import (
    FolderSweeper,
    Job,
    check_options,
    override_key,
    refuse,
    slug,
)

if TYPE_CHECKING:
    import pandas as pd

    from analysis.sequential import Design

# analysis (pandas, scipy, matplotlib) is imported where the sweeper runs, not here: Hydra imports every plugin
# module in every `run.py` process to find its plugins.

log = logging.getLogger(__name__)

STATE = "study.json"
REPORT = "study.md"
PLOT = "study.png"
OPTIONS = ("baseline", "margin", "alpha", "first", "step", "max_looks", "max_seeds", "spending", "futility",
           "max_runs", "rows_file", "max_batch_size")  # fmt: skip


class AdaptiveSweeper(FolderSweeper):
    """Rounds of seeds until every row of the table is decided (analysis.sequential) or the budget is spent."""

    name = "adaptive"

    def __init__(
        self,
        baseline: str = "baseline",
        margin: float | None = None,
        alpha: float | None = None,
        first: int | None = None,
        step: int | None = None,
        max_looks: int | None = None,
        max_seeds: int | None = None,
        spending: str | None = None,
        futility: float | None = None,
        max_runs: int | None = None,
        rows_file: str | None = None,
        max_batch_size: int | None = None,
        **unknown: Any,
    ) -> None:
        """The design options left None take analysis.sequential.Design's defaults."""
        from analysis.sequential import SPENDING, Design

        check_options(self.name, unknown, OPTIONS)
        super().__init__(max_batch_size)
        given = dict(margin=margin, alpha=alpha, first=first, step=step, max_looks=max_looks,
                     spending=spending, futility=futility)  # fmt: skip
        self.options = {k: getattr(Design, k) if v is None else v for k, v in given.items()}
        margin, first, step, spending = (self.options[k] for k in ("margin", "first", "step", "spending"))
        if not (isinstance(margin, int | float) and math.isfinite(margin) and margin >= 0):
            refuse(
                f"hydra.sweeper.margin={margin}: give 0 or more points of top-1 (0: no equivalence), e.g. 0.5"
            )
        if spending not in SPENDING:
            refuse(f"hydra.sweeper.spending={spending}: choose one of {', '.join(SPENDING)}")
        if max_seeds is not None:
            if max_seeds < first:
                refuse(
                    f"hydra.sweeper.max_seeds={max_seeds} is below the first round's {first} seeds per row"
                )
            self.options["max_looks"] = 1 + (max_seeds - first) // step
        if max_runs is not None and max_runs < 1:
            refuse(f"hydra.sweeper.max_runs={max_runs}: give a positive number of runs, or null (no limit)")
        self.baseline = str(baseline)
        self.design = self._design()  # checks the values now, before the rows are known
        self.max_runs = max_runs
        self.rows_file = rows_file

    def _design(self, rows: int | None = None) -> Design:
        from analysis.collect import AnalysisError
        from analysis.sequential import Design

        try:
            return Design(**self.options, rows=rows)
        except AnalysisError as e:
            refuse(f"hydra.sweeper: {e}")

    # The rows.

    def rows_of(self, fixed: list[str], swept: list[list[str]]) -> dict[str, list[str]]:
        """Row name -> the row's own overrides, from the sweep or `rows_file`."""
        if self.rows_file is not None:
            if swept:
                refuse("give the rows either as a sweep or as hydra.sweeper.rows_file, not both")
            return self._rows_from_file(Path(self.rows_file))
        if not swept:
            refuse("the adaptive sweeper needs rows to decide: sweep them, e.g. '+ablation=glob(*)'")
        rows: dict[str, list[str]] = {}
        for combo in itertools.product(*swept):
            parts = [o.partition("=")[2] if len(swept) == 1 else f"{override_key(o)}-{o.partition('=')[2]}"
                     for o in combo]  # fmt: skip
            name = "__".join(slug(p) for p in parts)
            while name in rows:
                name += "_"
            rows[name] = list(combo)
        return rows

    @staticmethod
    def _rows_from_file(path: Path) -> dict[str, list[str]]:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            refuse(f"hydra.sweeper.rows_file={path}: cannot read it ({e.__class__.__name__})")
        if not isinstance(data, dict) or not data or not all(isinstance(v, list) for v in data.values()):
            refuse(f"hydra.sweeper.rows_file={path}: give a YAML mapping of row name to a list of overrides")
        return {slug(str(name)): [str(o) for o in overrides] for name, overrides in data.items()}

    def baseline_of(self, rows: dict[str, list[str]]) -> str:
        """The row that `baseline` names: by row name, override value or override (`+ablation=baseline`)."""
        wanted = self.baseline.lstrip("+")
        found = [
            name
            for name, overrides in rows.items()
            if name == wanted
            or any(o.lstrip("+") == wanted or o.partition("=")[2] == wanted for o in overrides)
        ]
        if len(found) != 1:
            which = "no row" if not found else f"{len(found)} rows ({', '.join(found)})"
            refuse(f"hydra.sweeper.baseline={self.baseline} matches {which}; the rows: {', '.join(rows)}")
        return found[0]

    # The study.

    def sweep(self, arguments: list[str]) -> dict[str, Any]:
        fixed, swept = self.parse(arguments)
        if any(override_key(o) == "seed" for o in fixed + [s[0] for s in swept]):
            refuse("the adaptive sweeper chooses the seeds: drop seed= from the command")
        rows = self.rows_of(fixed, swept)
        baseline = self.baseline_of(rows)
        design = self._design(rows=len(rows) - 1)
        first_round = len(rows) * design.first
        if self.max_runs is not None and self.max_runs < first_round:
            refuse(
                f"hydra.sweeper.max_runs={self.max_runs} is smaller than the first round: {len(rows)} rows x "
                f"{design.first} seeds = {first_round} runs"
            )
        identity = {"fixed": fixed, "rows": rows, "baseline": baseline,
                    "design": {k: v for k, v in asdict(design).items()}}  # fmt: skip
        previous = self.read_state(STATE)
        if previous is not None and previous.get("identity") != identity:
            refuse(
                f"{self.sweep_dir} holds an adaptive study of another command (other rows, fixed overrides or "
                "design); run the same command to continue it, or choose another hydra.sweep.dir"
            )
        self.save_multirun_yaml()
        return self.run_study(fixed, rows, baseline, design, identity, (previous or {}).get("rounds", []))

    def run_study(
        self,
        fixed: list[str],
        rows: dict[str, list[str]],
        baseline: str,
        design: Design,
        identity: dict,
        earlier: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        """Rounds until every row has stopped, the budget stops the study, or no new run can be had. Round k
        trains the seeds look k needs and then decides look k. A rerun keeps the `earlier` rounds of study.json
        and replays their looks in order from the runs, training only what a stopped round left: a look is never
        taken on a round that is not finished (which the baseline's seed count alone cannot tell)."""
        from analysis.collect import AnalysisError
        from analysis.sequential import decide, next_seeds

        wanted = {name: list(range(design.first)) for name in rows}
        rounds: list[dict[str, Any]] = list(earlier)
        state: dict[str, Any] = {"identity": identity, "rounds": rounds, "finished": False}
        decisions = None
        for look in range(1, design.max_looks + 1):  # round k ends with look k, also when a rerun replays it
            jobs = [self.job(fixed, rows, name, seed) for name, seeds in wanted.items() for seed in seeds]
            new = [job for job in jobs if not self.ended(job.subdir)]
            spent = self.runs_spent(rows)
            if self.max_runs is not None and spent + len(new) > self.max_runs:
                state["stop"] = (
                    f"budget: the next round needs {len(new)} runs and {self.max_runs - spent} of "
                    f"hydra.sweeper.max_runs={self.max_runs} are left"
                )
                break
            if new:
                log.info("Adaptive study, round %d: %d runs (%s)", look, len(new),
                         ", ".join(sorted({j.subdir.partition('/')[0] for j in new})))  # fmt: skip
            started = time.monotonic()
            self.launch(jobs)
            seconds = round(time.monotonic() - started, 1) if new else 0.0
            try:
                decisions = decide(self.runs(rows), baseline=baseline, design=design, look=look)
            except AnalysisError as e:  # no run ended (every job was stopped): nothing to decide
                state["stop"] = f"no decision: {e}"
                break
            record = next((r for r in rounds if r["look"] == look), None)
            if record is None:
                rounds.append({
                    "round": len(rounds) + 1, "look": look, "launched": len(new), "seconds": seconds,
                    "runs": self.runs_spent(rows), "wanted": {k: list(v) for k, v in wanted.items()},
                })  # fmt: skip
            elif new:  # a round that a stop cut short, finished by this rerun
                record.update(launched=record["launched"] + len(new), runs=self.runs_spent(rows),
                              seconds=round(record.get("seconds", 0.0) + seconds, 1))  # fmt: skip
            # where a stopped study stands, after every round (the plot only after a round that trained)
            self.report(decisions, design, state, rows, plot=bool(new))
            if decisions["stopped"].all():
                state["finished"] = True
                state["stop"] = "every row is decided, futile or at its last look"
                break
            wanted = next_seeds(decisions)  # empty when a rerun has the next look's seeds already
            if wanted and all(
                self.ended(self.job(fixed, rows, n, s).subdir) for n, seeds in wanted.items() for s in seeds
            ):
                state["stop"] = "the seeds the rule asks for have all run and failed"
                break
        if decisions is None:
            state["decisions"] = []
            self.write_state(STATE, state)
        else:
            print(self.report(decisions, design, state, rows), flush=True)
        return state

    def report(
        self,
        decisions: pd.DataFrame,
        design: Design,
        state: dict,
        rows: dict[str, list[str]],
        plot: bool = True,
    ) -> str:
        """Write the decisions into study.json, study.md and (`plot`) study.png, the Δ plot with the rule's
        intervals; return the markdown."""
        from analysis.plots import plot_decisions

        state["decisions"] = _records(decisions)
        self.write_state(STATE, state)
        labels = self.from_results(rows, "label")
        text = render_study(decisions, design, state, labels)
        (self.sweep_dir / REPORT).write_text(text + "\n")
        if plot and decisions["delta"].notna().any():
            plot_decisions(decisions, self.sweep_dir / PLOT, labels, self.from_results(rows, "group"),
                           shared=state["identity"]["fixed"])  # fmt: skip
        return text

    def job(self, fixed: list[str], rows: dict[str, list[str]], name: str, seed: int) -> Job:
        return Job(f"{name}/seed_{seed}", (*fixed, *rows[name], f"seed={seed}"))

    def row_folders(self, rows: dict[str, list[str]]) -> list[tuple[str, int, str]]:
        """(row, seed, subdir) of every run folder the study has."""
        found = []
        for name in rows:
            for folder in sorted((self.sweep_dir / name).glob("seed_*")):
                seed = folder.name.removeprefix("seed_")
                if seed.isdigit():
                    found.append((name, int(seed), f"{name}/{folder.name}"))
        return found

    def runs_spent(self, rows: dict[str, list[str]]) -> int:
        """Runs that ended (completed, diverged, failed): what the budget counts."""
        return sum(self.ended(subdir) for _, _, subdir in self.row_folders(rows))

    def runs(self, rows: dict[str, list[str]]) -> pd.DataFrame:
        """Every run of the study as `decide` reads it: label (the row), seed, top1, status."""
        import pandas as pd

        records = []
        for name, seed, subdir in self.row_folders(rows):
            result = self.results(subdir)
            status = result.get("status")
            if status in ("completed", "diverged", "failed"):
                top1 = result.get("top1")
                records.append({"label": name, "seed": seed, "status": status,
                                "top1": float(top1) if isinstance(top1, int | float) else math.nan})  # fmt: skip
        return pd.DataFrame.from_records(records, columns=["label", "seed", "status", "top1"])

    def from_results(self, rows: dict[str, list[str]], key: str) -> dict[str, str]:
        """Row name -> what its runs' results.json holds under `key` (`label`: the ablation's name, `group`),
        where they hold one."""
        found = {}
        for name, _, subdir in self.row_folders(rows):
            value = self.results(subdir).get(key)
            if value and name not in found:
                found[name] = str(value)
        return found


def _records(decisions: pd.DataFrame) -> list[dict[str, Any]]:
    keep = ["label", "is_baseline", "n", "delta", "low", "high", "level", "outcome", "stop_look", "reason",
            "power", "tried"]  # fmt: skip
    frame = decisions[[c for c in keep if c in decisions.columns]].astype(object)
    frame = frame.where(frame.notna(), None)
    return frame.to_dict(orient="records")


def render_study(decisions: pd.DataFrame, design: Design, state: dict, labels: dict[str, str]) -> str:
    """The decisions as a markdown table, with a footnote naming the rule and a line saying why the study ended."""

    import pandas as pd

    def number(x: Any, fmt: str) -> str:
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    rows = []
    for _, r in decisions.iterrows():
        name = r["label"]
        shown = f"{labels[name]} ({name})" if name in labels and labels[name] != name else name
        if r["is_baseline"]:
            rows.append([shown, str(r["n"]), "baseline", "", "", ""])
            continue
        interval = (
            f"[{number(r['low'], '+.2f')}, {number(r['high'], '+.2f')}]" if r["low"] == r["low"] else ""
        )
        stop = f"look {r['stop_look']}: {r['reason']}" if r["stop_look"] else "running"
        rows.append([shown, str(r["n"]), r["outcome"], number(r["delta"], "+.2f"), interval, stop])
    table = pd.DataFrame(rows, columns=["row", "n", "outcome", "Δ top-1", "interval", "stopped"])
    looks = ", ".join(str(design.seeds_at(k)) for k in range(1, design.max_looks + 1))
    runs = state["rounds"][-1]["runs"] if state["rounds"] else 0
    seconds = round(sum(r.get("seconds", 0.0) for r in state["rounds"]))
    took = f" in {datetime.timedelta(seconds=seconds)} of rounds" if seconds else ""
    footnote = (
        f"Decision rule: the group-sequential design of analysis/sequential.py: each row paired by seed with the "
        f"baseline, looks at {looks} paired seeds, family-wise alpha {design.alpha:g} split by Bonferroni over "
        f"{decisions.attrs.get('rows')} rows and {design.max_looks} looks ({design.spending} spending); a row is "
        f"better/worse when its interval of Δ excludes 0, equivalent when it lies inside ±{design.margin:g} points "
        f"(TOST); futility stop below {design.futility:.0%} conditional power (non-binding). Intervals are at each "
        f"row's adjusted level."
    )
    ended = f"{len(state['rounds'])} rounds, {runs} runs{took}. " + (
        f"Stopped: {state['stop']}." if "stop" in state else "Running: the same command continues the study."
    )
    return f"{table.to_markdown(index=False, disable_numparse=True)}\n\n{footnote}\n\n{ended}"
