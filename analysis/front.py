"""The Pareto front of a search (`hydra/sweeper=search`): top-1 against MACs over its trained trials.

`search_front(sweep_dir)` reads the trials' run folders (analysis.collect) and the sweep's `search.json` (what
was searched, the objectives, the budget, the hand-made references and the baseline) and returns one row per
trained trial: the candidate (the searched overrides), top-1, GMACs, parameters, status, whether it is on the
front (no other trial has at least its top-1 at no more MACs, and better in one), and whether it is a
reference. `render_front` prints the front as a table, `plot_front` draws every trial with the front highlighted
and the references marked, and `confirm_rows` / `confirm_command` give the adaptive study
(hydra_plugins/metaformer_sweepers/adaptive.py) that re-trains the front's members with more seeds and decides
each against the baseline with the paired, group-sequential rule of analysis.sequential. `hypervolumes`
compares searches of the same space (a sampler against the random control): the hypervolume each one's trials
dominate after each trained trial, against one reference point for all.

Nothing here imports torch, and optuna only for its hypervolume: the run folders are the record (optuna.db only
steers the search).
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from analysis.collect import AnalysisError, collect_runs, split_overrides

STATE = "search.json"
SPACE_KEYS = {"mixer": "mixer", "norm": "norm", "act": "act", "mlp_ratios": "model.mlp_ratios"}


def read_state(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    """The sweep's search.json; AnalysisError when the folder is not a search's."""
    path = Path(sweep_dir) / STATE
    if not path.is_file():
        raise AnalysisError(
            f"{sweep_dir}: no {STATE}: not the folder of a search (python run.py -m +search=NAME)"
        )
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AnalysisError(f"{path}: unreadable ({e})") from e
    return state


def is_search(path: str | os.PathLike) -> bool:
    return (Path(path) / STATE).is_file()


def candidate_overrides(candidate: dict[str, list[Any]]) -> str:
    """`mixer=[pool,pool,attn,attn]`-style overrides of a candidate, joined, in the search's key order."""
    return " ".join(f"{SPACE_KEYS[k]}=[{','.join(str(v) for v in vals)}]" for k, vals in candidate.items())


def pareto(top1: np.ndarray, gmacs: np.ndarray) -> np.ndarray:
    """Mask of the points no other point dominates (at least the top-1 at no more MACs, better in one)."""
    on = np.ones(len(top1), dtype=bool)
    for i in range(len(top1)):
        others = (top1 >= top1[i]) & (gmacs <= gmacs[i]) & ((top1 > top1[i]) | (gmacs < gmacs[i]))
        on[i] = not others.any()
    return on


def search_front(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per trained trial of the search in `sweep_dir` (see the module's docstring); `attrs["state"]` is
    search.json."""
    state = read_state(sweep_dir)
    folders = sorted(Path(sweep_dir).glob("trial_*"), key=lambda p: int(p.name.partition("_")[2] or -1))
    folders = [f for f in folders if (f / ".hydra" / "config.yaml").is_file()]
    if not folders:
        raise AnalysisError(f"{sweep_dir}: the search has no trained trial yet")
    runs = collect_runs(folders)
    searched = [SPACE_KEYS[k] for k in state.get("space", {})]

    def candidate(overrides: str) -> str:
        own = {o.partition("=")[0]: o for o in split_overrides(overrides)}
        return " ".join(own[k] for k in searched if k in own)

    front = pd.DataFrame(
        {
            "trial": [int(Path(f).name.partition("_")[2]) for f in runs["folder"]],
            "candidate": runs["overrides"].map(candidate),
            "top1": runs["top1"],
            "gmacs": runs["gmacs"],
            "params_m": runs["params_m"],
            "status": runs["status"],
            "usable": runs["usable"],
            "folder": runs["folder"],
        }
    )
    ok = front["usable"].to_numpy() & np.isfinite(front["gmacs"].to_numpy(dtype=float))
    on = np.zeros(len(front), dtype=bool)
    on[ok] = pareto(front["top1"].to_numpy(dtype=float)[ok], front["gmacs"].to_numpy(dtype=float)[ok])
    budget = state.get("max_gmacs")
    if budget is not None:
        on &= front["gmacs"].to_numpy(dtype=float) <= budget
    front["on_front"] = on
    refs = [set(split_overrides(candidate_overrides(r))) for r in state.get("references") or []]
    front["reference"] = front["candidate"].map(
        lambda c: next((i + 1 for i, r in enumerate(refs) if r <= set(split_overrides(c))), 0)
    )
    base = state.get("baseline")
    front["is_baseline"] = front["candidate"].eq(candidate_overrides(base)) if base else False
    front = front.sort_values(["on_front", "gmacs"], ascending=[False, True], kind="stable").reset_index(
        drop=True
    )
    front.attrs["state"] = state
    front.attrs["sweep_dir"] = str(sweep_dir)
    return front


def render_front(front: pd.DataFrame) -> str:
    """The front's members as a markdown table (fewest MACs first), and a line on the whole search."""
    state = front.attrs.get("state", {})
    members = front[front["on_front"]].sort_values("gmacs")
    table = pd.DataFrame(
        {
            "trial": members["trial"],
            "candidate": members["candidate"],
            "top-1": members["top1"].map(lambda x: f"{x:.2f}"),
            "GMACs": members["gmacs"].map(lambda x: f"{x:.4g}"),
            "params (M)": members["params_m"].map(lambda x: f"{x:.3g}" if x == x else ""),
            "note": [
                ", ".join(n for n in ("reference" if r else "", "baseline" if b else "") if n)
                for r, b in zip(members["reference"], members["is_baseline"], strict=True)
            ],
        }
    )
    counts = state.get("counts") or {}
    failed = int(front["status"].isin(["failed", "diverged"]).sum())
    unfinished = int((~front["usable"] & ~front["status"].isin(["failed", "diverged"])).sum())
    budget = state.get("max_gmacs")
    lines = [
        f"Pareto front (top-1 up, MACs down) of {len(front)} trials"
        + (f", {failed} failed or diverged (told to Optuna as FAIL)" if failed else "")
        + (f", {unfinished} not finished" if unfinished else "")
        + (
            f"; {counts['over_budget']} candidates over the {budget:g} GMACs budget were not trained"
            if budget is not None and counts.get("over_budget")
            else ""
        )
        + f". Objectives: {', '.join(state.get('objectives', []))}; sampler {state.get('sampler')}"
        + f" (seed {state.get('seed')}).",
    ]
    if len(state.get("objectives", [])) == 1 and len(members):
        name = state["objectives"][0]
        best = members.sort_values(name, ascending=name in ("gmacs", "params_m")).iloc[0]
        within = f" within the {budget:g} GMACs budget" if budget is not None else ""
        lines.append(
            f"Best {name}{within}: trial {best['trial']}, {best['candidate']}: top-1 {best['top1']:.2f} at "
            f"{best['gmacs']:.4g} GMACs."
        )
    refs = front[front["reference"] > 0]
    if len(refs):
        lines.append(
            "References (hand-made hybrids): "
            + "; ".join(
                f"{c}: {t:.2f} at {g:.4g} GMACs"
                for c, t, g in zip(refs["candidate"], refs["top1"], refs["gmacs"], strict=True)
                if t == t
            )  # fmt: skip
            + "."
        )
    return table.to_markdown(index=False, disable_numparse=True) + "\n\n" + "\n".join(lines)


def plot_front(front: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Every trained trial as a point (top-1 against GMACs), the front joined and highlighted, the references
    marked and named, the MAC budget as a dashed line; a PNG at `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ok = front[front["usable"]]
    fig = Figure(figsize=(8.5, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(ok["gmacs"], ok["top1"], s=22, color="0.6", label="trial", zorder=2)
    members = ok[ok["on_front"]].sort_values("gmacs")
    ax.step(members["gmacs"], members["top1"], where="post", color="tab:red", lw=1.2, zorder=3)
    ax.scatter(members["gmacs"], members["top1"], s=46, color="tab:red", label="Pareto front", zorder=4)
    for _, r in members.iterrows():  # the trial numbers of the table
        ax.annotate(f"#{r['trial']}", (r["gmacs"], r["top1"]), xytext=(0, 7), textcoords="offset points",
                    fontsize=7, color="tab:red", ha="center")  # fmt: skip
    refs = ok[ok["reference"] > 0]
    ax.scatter(refs["gmacs"], refs["top1"], s=190, marker="*", facecolors="none", edgecolors="tab:blue",
               linewidths=1.3, label="paper's hybrids", zorder=5)  # fmt: skip
    middle = (ok["gmacs"].min() + ok["gmacs"].max()) / 2 if len(ok) else 0
    for _, r in refs.iterrows():
        text = r["candidate"].partition("=")[2] if r["candidate"].startswith("mixer=") else r["candidate"]
        right = r["gmacs"] > middle  # the name on the side with room
        ax.annotate(text, (r["gmacs"], r["top1"]), xytext=(-8 if right else 8, -13), textcoords="offset points",
                    fontsize=8, color="tab:blue", ha="right" if right else "left")  # fmt: skip
    base = ok[ok["is_baseline"]]
    if len(base):
        ax.scatter(base["gmacs"], base["top1"], s=80, marker="D", facecolors="none", edgecolors="black",
                   label="baseline", zorder=5)  # fmt: skip
    budget = front.attrs.get("state", {}).get("max_gmacs")
    if budget is not None:
        ax.axvline(budget, color="black", ls="--", lw=0.8, label=f"budget {budget:g} GMACs")
    ax.set_xlabel("GMACs per image")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"Search {Path(front.attrs.get('sweep_dir', '')).name}: {len(ok)} trials", fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(x=0.08, y=0.08)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def hypervolumes(fronts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The hypervolume (top-1 up, MACs down) each search's trained trials dominate after each of them, in trial
    order: columns search, sampler, trials (trained so far), hypervolume, share (of the box between the reference and the
    best top-1 and fewest MACs of any search). The reference point, shared by all searches, is the lowest top-1
    and the most MACs of any of their trained trials (`attrs["reference"]`), so only the searches' own points
    set the scale. Computed with Optuna's exact hypervolume (the one its samplers and plots use)."""
    from optuna._hypervolume import compute_hypervolume

    points, samplers = {}, {}
    for name, front in fronts.items():
        samplers[name] = front.attrs.get("state", {}).get("sampler")
        ok = front[front["usable"] & np.isfinite(front["gmacs"].astype(float))].sort_values("trial")
        if not len(ok):
            raise AnalysisError(f"{name}: no trained trial with a top-1 and MACs")
        points[name] = ok[["top1", "gmacs"]].to_numpy(dtype=float)
    every = np.concatenate(list(points.values()))
    reference = (float(every[:, 0].min()), float(every[:, 1].max()))
    box = (every[:, 0].max() - reference[0]) * (reference[1] - every[:, 1].min())
    records = []
    for name, p in points.items():
        loss = np.column_stack([-p[:, 0], p[:, 1]])  # both minimised
        ref = np.array([-reference[0], reference[1]])
        for k in range(1, len(p) + 1):
            inside = loss[:k][(loss[:k] < ref).all(axis=1)]
            volume = float(compute_hypervolume(inside, ref)) if len(inside) else 0.0
            records.append({"search": name, "sampler": samplers[name], "trials": k, "hypervolume": volume,
                            "share": volume / box if box > 0 else float("nan")})  # fmt: skip
    table = pd.DataFrame(records)
    table.attrs["reference"] = reference
    return table


def render_hypervolumes(history: pd.DataFrame, fronts: dict[str, pd.DataFrame]) -> str:
    """Each search's final hypervolume (and after a quarter, half and three quarters of its trials) as a table."""
    rows = []
    for name, group in history.groupby("search", sort=False):
        state = fronts[name].attrs.get("state", {})
        n = int(group["trials"].max())
        at = {
            q: group.loc[group["trials"] == max(1, round(q * n)), "share"].iloc[0] for q in (0.25, 0.5, 0.75)
        }
        final = group.iloc[-1]
        rows.append(
            {
                "search": name,
                "sampler": f"{state.get('sampler')} (seed {state.get('seed')})",
                "trials": n,
                "front": int(fronts[name]["on_front"].sum()),
                "hypervolume": f"{final['hypervolume']:.5f}",
                "share of the box": f"{final['share']:.1%}",
                "after 1/4, 1/2, 3/4 of the trials": ", ".join(f"{v:.1%}" for v in at.values()),
            }
        )
    top1, gmacs = history.attrs["reference"]
    return (
        pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)
        + f"\n\nHypervolume in points of top-1 x GMACs, against the reference point (top-1 {top1:.2f}, "
        f"{gmacs:.4g} GMACs): the lowest top-1 and the most MACs of any trained trial of these searches. "
        "Share of the box: of the rectangle between that point and the best top-1 and fewest MACs of any of them."
    )


def plot_hypervolumes(history: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Each search's hypervolume share against its trained trials; a PNG at `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, group in history.groupby("search", sort=False):
        label = f"{name} ({group['sampler'].iloc[0]})" if group["sampler"].iloc[0] else name
        ax.step(group["trials"], 100 * group["share"], where="post", lw=1.5, label=label)
    ax.set_xlabel("trained trials")
    ax.set_ylabel("hypervolume (% of the box)")
    top1, gmacs = history.attrs["reference"]
    ax.set_title(f"Hypervolume, reference point top-1 {top1:.2f} at {gmacs:.4g} GMACs", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def confirm_rows(front: pd.DataFrame) -> dict[str, list[str]]:
    """Rows for the confirmation study: `baseline` (the search's) and each front member (`front_<trial>`)."""
    state = front.attrs.get("state", {})
    base = state.get("baseline")
    if not base:
        raise AnalysisError("the search names no baseline (hydra.sweeper.baseline in conf/search/NAME.yaml): "
                            "nothing to confirm the front against")  # fmt: skip
    base_overrides = candidate_overrides(base)
    rows = {"baseline": split_overrides(base_overrides)}
    for _, r in front[front["on_front"]].sort_values("gmacs").iterrows():
        if r["candidate"] != base_overrides:
            rows[f"front_{r['trial']}"] = split_overrides(r["candidate"])
    if len(rows) < 2:
        raise AnalysisError("the front holds only the baseline: nothing to confirm")
    return rows


def confirm_command(front: pd.DataFrame, rows_file: str | os.PathLike) -> list[str]:
    """The commands that re-train the front with more seeds (the adaptive study) and print their paired table."""
    state = front.attrs.get("state", {})
    sweep = Path(front.attrs.get("sweep_dir", "."))
    fixed = [o for o in state.get("fixed", [])
             if o.partition("=")[0].lstrip("+~") not in ("search", "seed") and not o.lstrip("+~").startswith("hydra")]  # fmt: skip
    base = candidate_overrides(state["baseline"])
    confirm = sweep / "confirm"
    # three seeds for every member and the baseline, decided in one look (raise max_looks for more where open)
    run = ["python", "run.py", "-m", "hydra/sweeper=adaptive", *fixed, f"hydra.sweeper.rows_file={rows_file}",
           "hydra.sweeper.baseline=baseline", "hydra.sweeper.first=3", "hydra.sweeper.max_looks=1",
           f"hydra.sweep.dir={confirm}"]  # fmt: skip
    table = ["python", "-m", "analysis", str(confirm), "--baseline", base]
    return [shlex.join(run), shlex.join(table)]


def write_confirm_rows(front: pd.DataFrame, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(confirm_rows(front), sort_keys=False))
    return path
