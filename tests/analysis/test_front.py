"""`python -m analysis front`: the Pareto front of a search's trial folders (made here, no training), its table,
plot and the confirmation study's rows and command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from analysis.__main__ import main
from analysis.front import confirm_command, confirm_rows, hypervolumes, pareto, search_front

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


def make_search(sweep, trials, state=STATE):
    sweep.mkdir()
    (sweep / "search.json").write_text(json.dumps(state))
    for n, (mixers, top1, gmacs, status) in trials.items():
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


@pytest.fixture
def search_dir(tmp_path):
    return make_search(tmp_path / "sweep", TRIALS)


# The control: the same space, another sampler. With TRIALS its trials set the shared reference point at the
# lowest top-1 (86) and the most MACs (0.040 of TRIALS' trial 3).
CONTROL = {
    0: ("attn,pool,attn,pool", 89.0, 0.030, "completed"),
    1: ("pool,attn,pool,pool", 86.0, 0.022, "completed"),  # at the reference's top-1: no volume
}


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
                   f"hydra.sweeper.baseline=baseline hydra.sweeper.first=3 hydra.sweeper.max_looks=1 "
                   f"hydra.sweep.dir={search_dir / 'confirm'}")  # fmt: skip
    assert table.endswith("--baseline 'mixer=[pool,pool,pool,pool]'")
    assert confirm_rows(search_front(search_dir))["baseline"] == ["mixer=[pool,pool,pool,pool]"]


def test_a_folder_that_is_no_search_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["front", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no search.json: not the folder of a search" in err[0]


def test_hypervolume_of_a_search_and_its_control_after_each_trial(search_dir, tmp_path):
    control = make_search(tmp_path / "control", CONTROL, {**STATE, "sampler": "random"})
    fronts = {"nsga2": search_front(search_dir), "random": search_front(control)}
    history = hypervolumes(fronts)
    assert history.attrs["reference"] == (86.0, 0.040)
    by = {name: g["hypervolume"].tolist() for name, g in history.groupby("search")}
    # trial 0 (90 at 0.026): 4 x 0.014; trial 1 (88 at 0.020) adds 2 x 0.006; trial 2 is dominated; trial 3 sits
    # at the reference's MACs (no volume); trial 4 diverged (no point)
    assert by["nsga2"] == pytest.approx([0.056, 0.068, 0.068, 0.068])
    assert by["random"] == pytest.approx([0.030, 0.030])  # 3 x 0.010
    box = (91 - 86) * (0.040 - 0.020)
    assert history.groupby("search")["share"].last().to_dict() == pytest.approx(
        {"nsga2": 0.068 / box, "random": 0.030 / box}
    )


def test_the_command_compares_hypervolumes_against_a_control(search_dir, tmp_path, capsys):
    control = make_search(tmp_path / "control", CONTROL, {**STATE, "sampler": "random"})
    out_dir = tmp_path / "out"
    assert main(["front", str(search_dir), "--against", str(control), "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert (
        "Hypervolume of each search" in out and "68.0%" in out and "30.0%" in out and "random (seed 0)" in out
    )
    assert (out_dir / "hypervolume.png").stat().st_size > 10_000
    assert main(["front", str(search_dir), "--against", str(tmp_path / "nothing")]) == 2
