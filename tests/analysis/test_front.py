"""`python -m analysis front`: the Pareto front of a search's trial folders (made here, no training), its table,
plot and the confirmation study's rows and command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from analysis.__main__ import main
from analysis.front import confirm_command, confirm_rows, pareto, search_front

STATE = {
    "fixed": ["+experiment=mini", "+search=hybrid"],
    "space": {"mixer": [["pool", "attn"]] * 4},
    "objectives": ["top1", "gmacs"],
    "max_gmacs": None,
    "sampler": "nsga2",
    "seed": 0,
    "references": [{"mixer": ["pool", "pool", "attn", "attn"]}],
    "baseline": {"mixer": ["pool", "pool", "pool", "pool"]},
    "counts": {"trained": 5, "over_budget": 0},
}
# trial: (mixers, top1, gmacs, status)
TRIALS = {
    0: ("pool,pool,attn,attn", 90.0, 0.026, "completed"),  # the reference: on the front
    1: ("pool,pool,pool,pool", 88.0, 0.020, "completed"),  # the baseline: cheapest, on the front
    2: ("pool,attn,pool,pool", 87.0, 0.024, "completed"),  # dominated by trial 1
    3: ("attn,attn,attn,attn", 91.0, 0.040, "completed"),  # the best: on the front
    4: ("attn,pool,pool,pool", None, 0.025, "diverged"),
}


@pytest.fixture
def search_dir(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "search.json").write_text(json.dumps(STATE))
    for n, (mixers, top1, gmacs, status) in TRIALS.items():
        folder = sweep / f"trial_{n}"
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
        (folder / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump(["+experiment=mini", f"mixer=[{mixers}]"])
        )
        record = {"status": status, "top1": top1, "gmacs": gmacs, "params_m": 2.0, "seed": 0, "data": "d",
                  "model": "m", "mixers": mixers.split(",")}  # fmt: skip
        (folder / "results.json").write_text(json.dumps(record))
    return sweep


def test_pareto_keeps_the_points_nothing_dominates():
    top1, gmacs = np.array([90.0, 88, 87, 91, 88]), np.array([0.026, 0.020, 0.024, 0.040, 0.020])
    assert pareto(top1, gmacs).tolist() == [True, True, False, True, True]  # a tie dominates neither


def test_the_front_marks_members_references_and_the_baseline(search_dir):
    front = search_front(search_dir).set_index("trial")
    assert sorted(front.index[front["on_front"]]) == [0, 1, 3]
    assert front.loc[0, "reference"] == 1 and front.loc[1, "is_baseline"]
    assert not front.loc[4, "usable"] and not front.loc[4, "on_front"]  # the diverged trial is no point


def test_the_command_prints_the_front_writes_the_plot_and_the_confirmation(search_dir, tmp_path, capsys):
    assert main(["front", str(search_dir), "--out", str(tmp_path / "out"), "--confirm"]) == 0
    out = capsys.readouterr().out
    assert (
        "| 1       | mixer=[pool,pool,pool,pool]" in out
        and "reference" in out
        and "1 failed or diverged" in out
    )
    assert (tmp_path / "out" / "front.png").stat().st_size > 10_000
    rows = yaml.safe_load((tmp_path / "out" / "confirm_rows.yaml").read_text())
    assert rows == {"baseline": ["mixer=[pool,pool,pool,pool]"], "front_0": ["mixer=[pool,pool,attn,attn]"],
                    "front_3": ["mixer=[attn,attn,attn,attn]"]}  # fmt: skip
    run, table = confirm_command(search_front(search_dir), "rows.yaml")
    assert run == (f"python run.py -m hydra/sweeper=adaptive +experiment=mini hydra.sweeper.rows_file=rows.yaml "
                   f"hydra.sweeper.baseline=baseline hydra.sweep.dir={search_dir / 'confirm'}")  # fmt: skip
    assert table.endswith("--baseline 'mixer=[pool,pool,pool,pool]'")
    assert confirm_rows(search_front(search_dir))["baseline"] == ["mixer=[pool,pool,pool,pool]"]


def test_a_folder_that_is_no_search_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["front", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no search.json: not the folder of a search" in err[0]
