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
