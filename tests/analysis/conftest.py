"""Run folders as training writes them (`.hydra/`, results.json, metrics.csv), built in tmp_path."""

import json
from pathlib import Path

import pytest

# The ablation rows of the fixture multirun: label, ablation config, group, paper top-1, params, MACs.
ROWS = {
    "pool_size_5": ("pool size 5", "pool size", 77.2, 11.9, 1.8),
    "baseline": ("baseline", "baseline", 77.2, 11.9, 1.8),
    "norm_ln": ("LN", "norm", 76.5, 11.9, 1.8),
    "hybrid_ppaa": ("[pool, pool, attn, attn]", "hybrid", 81.0, 16.5, 2.5),
    "act_relu": ("ReLU", "activation", 76.4, 11.9, 1.8),
}

# Hydra job number -> (ablation, seed, status, top1); status None = no results.json (crashed or running).
# The baseline is not job 0, and job 10 exists, so row order tests baseline-first and natural folder order.
JOBS = {
    0: ("pool_size_5", 0, "completed", 71.0),
    1: ("pool_size_5", 1, "completed", 74.0),
    2: ("baseline", 0, "completed", 70.0),
    3: ("baseline", 1, "completed", 72.0),
    4: ("norm_ln", 0, "completed", 68.0),
    5: ("norm_ln", 1, "diverged", 10.0),
    6: ("hybrid_ppaa", 0, "completed", 75.0),
    7: ("hybrid_ppaa", 1, "failed", None),
    8: ("hybrid_ppaa", 2, None, None),
    9: ("pool_size_5", 2, "preempted", 50.0),
    10: ("act_relu", 0, "completed", 66.0),
}


def write_run(folder: Path, overrides: list[str], results: dict | None, epochs: int = 2) -> Path:
    """Write one run folder: .hydra/{config,overrides,hydra}.yaml, metrics.csv and results.json (unless None)."""
    hydra = folder / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "config.yaml").write_text("seed: 0\nmodel:\n  name: poolformer_s12\n")
    (hydra / "hydra.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    (hydra / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides) or "[]\n")
    rows = [f"{e},{2.3 - 0.1 * e},{2.2 - 0.1 * e},{10 * e},{20 * e},0.001" for e in range(epochs)]
    (folder / "metrics.csv").write_text("\n".join(["epoch,train_loss,val_loss,top1,top5,lr", *rows]) + "\n")
    if results is not None:
        (folder / "results.json").write_text(json.dumps(results))
    return folder


def results(ablation: str, seed: int, status: str, top1: float | None, **extra) -> dict:
    """Return a results.json dict of one ablation run, as the training code writes it."""
    label, group, paper, params, gmacs = ROWS[ablation]
    return {
        "status": status,
        "top1": top1,
        "top5": None if top1 is None else top1 + 20,
        "best_top1": top1,
        "loss": 1.0,
        "epochs": 2,
        "params_m": params,
        "gmacs": gmacs,
        "train_img_per_s": 100.0 + seed,
        "wall_s": 12.0,
        "mixers": ["pool", "pool", "attn", "attn"] if ablation == "hybrid_ppaa" else ["pool"] * 4,
        "norm": "ln" if ablation == "norm_ln" else "gn1",
        "act": "relu" if ablation == "act_relu" else "gelu",
        "seed": seed,
        "model": "poolformer_s12",
        "data": "fashion_mnist",
        "label": label,
        "ablation": ablation,
        "group": group,
        "paper_top1": paper,
        "git_commit": "abc1234",
        **extra,
    }


@pytest.fixture
def make_run():
    """The function that writes one run folder (tests import no helpers: conftest is not a package module)."""
    return write_run


@pytest.fixture
def make_results():
    """The function that returns one ablation run's results.json dict."""
    return results


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
    """A Hydra multirun folder of 11 jobs: 5 ablation rows, 2-3 seeds, failed/diverged/preempted/crashed runs."""
    sweep = tmp_path / "multirun" / "2026-11-25" / "10-00-00"
    for job, (ablation, seed, status, top1) in JOBS.items():
        overrides = [f"+ablation={ablation}", f"seed={seed}", "trainer.epochs=2", "hydra.launcher.n_jobs=2"]
        result = None if status is None else results(ablation, seed, status, top1, extra_metric=job / 10)
        write_run(sweep / str(job), overrides, result, epochs=1 if status is None else 2)
    (sweep / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    return tmp_path / "multirun"


# A sweep with known numbers, 3 seeds a row, for the statistics. Every run shares `experiment=mini` and
# `trainer.epochs=1`; rows are named by their own override. Paper top-1 per row (the paper's baseline: 77.2).
# Baseline seeds 0, 1, 2 score 70, 72, 71; each row below gives its per-seed differences to that (paired rows)
# or its own top-1 (the Welch and single-seed rows).
BASE_TOP1 = {0: 70.0, 1: 72.0, 2: 71.0}
STUDY = {
    # override: (paper top-1, {seed: top-1})
    "norm=bn": (78.0, {0: 73.0, 1: 75.1, 2: 73.9}),  # Δ +3.0 ± 0.1 paired: resolved, agrees (paper +0.8)
    "act=relu": (78.1, {0: 68.0, 1: 69.9, 2: 69.1}),  # Δ -2.0 ± 0.1: resolved, opposite (paper +0.9)
    "mixer=attn": (78.0, {0: 71.0, 1: 73.5, 2: 73.0}),  # diffs 1, 1.5, 2: raw p 0.035, Holm p 0.105
    "norm=ln": (76.5, {0: 70.5, 1: 71.6, 2: 71.8}),  # diffs 0.5, -0.4, 0.8: within noise
    "mixer=dwconv": (78.1, {3: 72.0, 4: 74.0, 5: 73.0}),  # seeds 3-5, none shared: Welch, Δ +2.0
    "act=silu": (77.2, {0: 69.0}),  # a single seed: no CI, no test
}
# Runs left out of the averages, with what results.json says about them.
STUDY_EXCLUDED = {
    ("", 3): {"status": "failed", "top1": None, "error": "RuntimeError: out of memory"},
    ("norm=ln", 3): {
        "status": "diverged",
        "top1": 10.0,
        "diverged_epoch": 2,
        "diverged_batch": 17,
        "diverged_step": 117,
        "error": "the training loss became NaN/inf at step 117 (epoch 2, batch 17)",
    },
    ("act=relu", 4): {
        "status": "preempted",
        "top1": 50.0,
        "signal": "SIGTERM",
        "error": "stopped by signal SIGTERM after batch 3 of epoch 1; last.pt saved there",
    },
}


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A multirun of 7 configurations x up to 3 seeds with known top-1, plus a failed, diverged and preempted run."""
    sweep = tmp_path / "study"
    jobs = [("", 77.2, seed, {"status": "completed", "top1": top1}) for seed, top1 in BASE_TOP1.items()]
    for override, (paper, runs) in STUDY.items():
        jobs += [
            (override, paper, seed, {"status": "completed", "top1": top1}) for seed, top1 in runs.items()
        ]
    for (override, seed), record in STUDY_EXCLUDED.items():
        jobs.append((override, STUDY.get(override, (77.2,))[0], seed, record))
    for job, (override, paper, seed, record) in enumerate(jobs):
        overrides = ["experiment=mini", "trainer.epochs=1", f"seed={seed}", *([override] if override else [])]
        gmacs = 2.5 if "attn" in override else 1.8
        result = {
            "seed": seed,
            "paper_top1": paper,
            "params_m": 11.9,
            "gmacs": gmacs,
            "data": "d",
            "model": "m",
        }
        write_run(sweep / str(job), overrides, {**result, **record})
    return sweep
