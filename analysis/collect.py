"""Reading run folders into one pandas DataFrame of runs, one row per run.

A run folder is any directory holding `.hydra/config.yaml` (Hydra writes one for every job, single run or
multirun). Its `results.json` (written by the training code when a run ends, see the run-folder contract in
docs/run-folder.md) gives the numbers; `.hydra/overrides.yaml` gives the command-line overrides, which name the
configuration when the run has no ablation `label`. A folder without `results.json` is a run that crashed before
writing it or is still running: it is kept with status "incomplete", so that tables list it instead of dropping
it. A CSV file (a `runs.csv` written by `python -m analysis --out`, or a wandb export whose columns are
results.json keys) can stand in for run folders, e.g. to redo the analysis on a laptop.

One (configuration, seed) pair is one observation: the same command run twice trains the same model on the same
data order, so two runs of it are not two samples of the noise. When a configuration has several completed runs
of one seed, the newest is kept (largest results.json modification time, `results_mtime`; runs without one, as in
a CSV that lacks the column, count as older, and ties go to the last in folder order) and the others are left out
of the averages with status "completed", `duplicate_of` naming the kept run's folder and a `problem` saying so.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

# Override keys that do not change what is trained: the seed (runs of one configuration differ only by it) and
# where or how jobs run. A key matches itself and its sub-keys (`hydra` matches `hydra.launcher.n_jobs`,
# `hydra/launcher`).
IGNORED_OVERRIDES = ("seed", "hydra", "launcher", "logger", "data.root")

NUMERIC_COLUMNS = (
    "top1",
    "top5",
    "best_top1",
    "loss",
    "epochs",
    "params_m",
    "gmacs",
    "train_img_per_s",
    "wall_s",
    "paper_top1",
    "seed",
    "epochs_logged",
    "results_mtime",
)
# Columns every runs DataFrame has, in this order; results.json's other keys follow them.
LEADING_COLUMNS = (
    "config",
    "data",
    "model",
    "seed",
    "status",
    "usable",
    "top1",
    "top5",
    "best_top1",
    "paper_top1",
    "params_m",
    "gmacs",
    "train_img_per_s",
    "label",
    "ablation",
    "group",
    "overrides",
    "epochs_logged",
    "problem",
    "folder",
    "duplicate_of",
)
# wandb's CSV export names a run's state in a "State" column with its own words.
WANDB_STATES = {"finished": "completed", "crashed": "failed", "failed": "failed", "killed": "preempted"}


class AnalysisError(Exception):
    """Input that analysis cannot use: a missing path, no runs, an unknown baseline."""


def _natural_key(name: str) -> list:
    # Hydra numbers multirun jobs 0, 1, ..., 10: sort "10" after "9", not after "1".
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def find_run_dirs(root: str | os.PathLike) -> list[Path]:
    """Return the run folders (those holding `.hydra/config.yaml`) at or below `root`, in natural order."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        if os.path.isfile(os.path.join(dirpath, ".hydra", "config.yaml")):
            found.append(Path(dirpath))
            dirnames.clear()  # a run's own sub-folders (wandb/, checkpoints) hold no further runs
            continue
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=_natural_key)
    return found


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _is_ignored(override: str) -> bool:
    key = _override_key(override)
    return any(key == k or key.startswith((k + ".", k + "/")) for k in IGNORED_OVERRIDES)


def config_overrides(overrides: Iterable[str]) -> str:
    """Return the overrides that define a configuration (no seed, no hydra/launcher/logger), sorted, joined."""
    kept = sorted(o.lstrip("+") for o in overrides if not _is_ignored(o))
    return " ".join(kept)


def split_overrides(overrides: str) -> list[str]:
    """Split a joined overrides string back into overrides (a value may hold spaces: `a=[x, y] b=1`)."""
    return [o for o in re.split(r" (?=[+~]?[\w./@-]+=)", overrides) if o]


def shared_overrides(overrides: Iterable[str]) -> list[str]:
    """Return the overrides every configuration shares (none when there is only one configuration), sorted.

    They say how the whole sweep ran (`experiment=mini`, `trainer.epochs=1`): a table prints them once in a
    header line and leaves them out of its row labels, which then show only what differs.
    """
    configurations = {o for o in overrides if isinstance(o, str)}
    if len(configurations) < 2:
        return []
    return sorted(set.intersection(*(set(split_overrides(o)) for o in configurations)))


def _read_overrides(path: Path) -> list[str]:
    try:
        overrides = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in overrides] if isinstance(overrides, list) else []


def _seed_from(overrides: list[str]) -> str | None:
    for o in overrides:
        if _override_key(o) == "seed":
            return o.split("=", 1)[1] if "=" in o else None
    return None


def _count_metrics_rows(path: Path) -> int | None:
    try:
        with path.open() as f:
            return max(sum(1 for line in f if line.strip()) - 1, 0)  # minus the header
    except OSError:
        return None


def read_run(folder: str | os.PathLike) -> dict:
    """Return one run as a flat dict: results.json's keys plus folder, status, problem, overrides."""
    folder = Path(folder)
    overrides = _read_overrides(folder / ".hydra" / "overrides.yaml")
    record: dict = {}
    results_path = folder / "results.json"
    if results_path.is_file():
        with contextlib.suppress(OSError):
            record["results_mtime"] = results_path.stat().st_mtime
    if not results_path.is_file():
        record.update(
            status="incomplete", problem="no results.json: still running, or crashed before writing it"
        )
    else:
        try:
            results = json.loads(results_path.read_text())
        except (OSError, ValueError) as e:
            results = f"results.json unreadable: {e}"
        if not isinstance(results, dict):
            record.update(status="unreadable", problem=str(results)[:200])
        else:
            record.update(results)
            if "status" not in results:
                record.update(status="unknown", problem="results.json has no 'status' key")
            elif results["status"] == "running":
                record["problem"] = "results.json says running: still running, or killed before it could end"
    if record.get("seed") is None:  # a run that wrote no results still has its seed override
        record["seed"] = _seed_from(overrides)
    record.update(
        folder=str(folder),
        overrides=config_overrides(overrides),
        epochs_logged=_count_metrics_rows(folder / "metrics.csv"),
    )
    return record


def read_runs_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Return the runs in a CSV file (a runs.csv from `--out`, or a wandb export with results.json columns)."""
    path = Path(path)
    try:
        runs = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise AnalysisError(f"{path}: cannot read it as CSV ({e})") from e
    if "top1" not in runs.columns:
        raise AnalysisError(
            f"{path}: no 'top1' column; a runs CSV needs results.json's keys as columns (as runs.csv has)"
        )
    if "status" not in runs.columns:
        if "State" in runs.columns:
            runs["status"] = runs["State"].map(lambda s: WANDB_STATES.get(str(s).lower(), str(s).lower()))
        else:
            runs["status"] = "completed"
    if "folder" not in runs.columns:
        names = runs["Name"].astype(str) if "Name" in runs.columns else pd.Series(runs.index.astype(str))
        runs["folder"] = f"{path}:" + names
    if "overrides" not in runs.columns:
        runs["overrides"] = ""
    return runs.drop(columns=["config", "usable"], errors="ignore")


def _finish(runs: pd.DataFrame) -> pd.DataFrame:
    """Give the runs their `config` and `usable` columns and the columns every runs DataFrame has."""
    runs = runs.reset_index(drop=True)
    for column in LEADING_COLUMNS + NUMERIC_COLUMNS:
        if column not in runs.columns:
            runs[column] = None
    for column in NUMERIC_COLUMNS:
        runs[column] = pd.to_numeric(runs[column], errors="coerce")
    runs["overrides"] = runs["overrides"].fillna("").astype(str)
    runs["status"] = runs["status"].fillna("unknown").astype(str)
    runs["problem"] = runs["problem"].astype(object)  # all-empty in a CSV of clean runs: read as float
    # A run without results.json has no label, data or model; a sibling with the same overrides has them.
    labelled = runs.dropna(subset=["label"]).drop_duplicates("overrides").set_index("overrides")
    missing = runs["label"].isna() & runs["overrides"].isin(labelled.index)
    for column in ("label", "group", "ablation", "data", "model", "paper_top1"):
        borrowed = runs.loc[missing, "overrides"].map(labelled[column])
        runs.loc[missing, column] = runs.loc[missing, column].fillna(borrowed)
    has_label = runs["label"].notna() & (runs["label"].astype(str) != "")
    shared = set(shared_overrides(runs["overrides"]))
    own = runs["overrides"].map(lambda o: " ".join(x for x in split_overrides(o) if x not in shared))
    runs["config"] = runs["label"].where(has_label, own.replace("", "default"))
    has_top1 = pd.Series(np.isfinite(runs["top1"].to_numpy(dtype=float)), index=runs.index)
    runs["usable"] = runs["status"].eq("completed") & has_top1
    no_top1 = runs["status"].eq("completed") & ~has_top1
    runs.loc[no_top1, "problem"] = "status completed but top1 is missing or not finite"
    _drop_repeated_seeds(runs)
    rest = [c for c in runs.columns if c not in LEADING_COLUMNS]
    return runs[list(LEADING_COLUMNS) + rest]


def _drop_repeated_seeds(runs: pd.DataFrame) -> None:
    """Keep one usable run per (configuration, data, model, seed), the newest; mark the others (in place)."""
    runs["duplicate_of"] = runs["duplicate_of"].astype(object)
    usable = runs[runs["usable"] & runs["seed"].notna()]
    key = ["config", "data", "model", "seed"]
    repeated = usable[usable.duplicated(key, keep=False)]
    if repeated.empty:
        return
    # Oldest first, the folder order breaking ties: the last of each group is the one kept.
    ordered = repeated.assign(
        _mtime=repeated["results_mtime"].fillna(-np.inf), _order=np.arange(len(repeated))
    ).sort_values(["_mtime", "_order"], kind="stable")
    for _, group in ordered.groupby(key, dropna=False, sort=False):
        kept = group.index[-1]
        dropped = group.index[:-1]
        folder = runs.at[kept, "folder"]
        runs.loc[dropped, "usable"] = False
        runs.loc[dropped, "duplicate_of"] = folder
        runs.loc[dropped, "problem"] = (
            f"repeat of seed {_seed_text(runs.at[kept, 'seed'])} of this configuration: one run per "
            f"(configuration, seed) counts, the newest is kept: {folder}"
        )


def _seed_text(seed: float) -> str:
    return str(int(seed)) if float(seed).is_integer() else str(seed)


def collect_runs(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Return every run under `paths` (run folders, multirun folders or runs CSVs) as one DataFrame, one row each."""
    frames: list[pd.DataFrame] = []
    seen: set[Path] = set()
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise AnalysisError(
                f"{p}: no such file or folder; give a run folder, a multirun folder or a runs CSV"
            )
        if p.is_file():
            if p.suffix.lower() != ".csv":
                raise AnalysisError(
                    f"{p}: a file but not a .csv; give a run folder, a multirun folder or a CSV"
                )
            frames.append(read_runs_csv(p))
            continue
        dirs = find_run_dirs(p)
        if not dirs:
            raise AnalysisError(
                f"{p}: holds no runs (no folder with .hydra/config.yaml in it); "
                "give a Hydra output folder such as multirun/DATE/TIME or outputs/DATE/TIME"
            )
        new = [d for d in dirs if d.resolve() not in seen]  # overlapping PATHs name a run once
        seen.update(d.resolve() for d in new)
        frames.append(pd.DataFrame.from_records([read_run(d) for d in new]))
    if not frames:
        raise AnalysisError("no PATH given; give at least one run folder, multirun folder or runs CSV")
    return _finish(pd.concat(frames, ignore_index=True))
