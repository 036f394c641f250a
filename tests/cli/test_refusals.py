"""A command refused before training leaves an existing run folder byte for byte as it was: a bad config, a
checkpoint of another model, a resume path that is not there, an unsafe or a corrupt checkpoint. Only a run that
started writes `.hydra/`; the refusal goes to the console (and may be appended to run.log). A new run folder (one
job of a sweep, say) gets a `failed` results.json with the error, so the analysis lists the job."""

import json
import shutil

import pytest
import torch

from analysis import collect_runs
from analysis.table import excluded_runs


class RunsCode:
    """Unpickling this would run code."""

    def __reduce__(self):
        return exec, ("raise SystemExit('the code ran')",)


@pytest.fixture
def finished_run(tmp_path, cli, quick, folder_snapshot):
    """A run folder of one finished epoch, made by the CLI, and a snapshot of its files."""
    run = tmp_path / "run"
    done = cli(*quick, f"hydra.run.dir={run}")
    assert done.code == 0, done.err
    assert {
        "results.json",
        "metrics.csv",
        "last.pt",
        "best.pt",
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
    } <= set(folder_snapshot(run))
    return run


def _unchanged(before: dict, after: dict) -> bool:
    """Every file as it was; run.log may have grown by the refusal."""
    log = "run.log"
    return {k: v for k, v in before.items() if k != log} == {k: v for k, v in after.items() if k != log} and (
        after.get(log, b"").startswith(before.get(log, b""))
    )


def test_refused_commands_leave_the_run_folder_as_it_was(finished_run, tmp_path, cli, quick, folder_snapshot):
    run = finished_run
    before = folder_snapshot(run)
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": RunsCode()}, evil)
    cases = [  # (arguments, exit status, words of the one line)
        (["norm=ln"], 2, "does not match the configured model"),
        (["trainer.epochs=0"], 2, "trainer.epochs must be a positive integer"),
        ([f"resume={tmp_path / 'nowhere'}"], 1, "no such file or folder"),
        ([f"resume={evil}"], 1, "not a weights-only checkpoint"),
    ]
    for args, code, words in cases:
        refused = cli(*quick, *args, f"hydra.run.dir={run}")
        assert refused.code == code, (args, refused.err)
        assert len(refused.lines) == 1 and words in refused.lines[0], refused.err
        assert _unchanged(before, folder_snapshot(run)), args
    assert "norm=ln" not in (run / ".hydra" / "overrides.yaml").read_text()


def test_a_corrupt_last_pt_is_named_as_corrupt_and_left_alone(
    finished_run, tmp_path, cli, quick, folder_snapshot
):
    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    last = run / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # a copy cut short
    before = folder_snapshot(run)
    refused = cli(*quick, "trainer.epochs=2", f"hydra.run.dir={run}")
    assert refused.code == 1 and len(refused.lines) == 1, refused.err
    line = refused.lines[0]
    assert f"{last} is truncated or corrupt" in line and "resume=false" in line and "weights-only" not in line
    assert _unchanged(before, folder_snapshot(run))
    last.write_bytes(b"not a checkpoint at all")  # garbage: corrupt too, not "unsafe"
    assert "is truncated or corrupt" in cli(*quick, "trainer.epochs=2", f"hydra.run.dir={run}").lines[0]


def test_a_refused_job_in_a_new_run_folder_is_recorded_as_failed_and_listed(tmp_path, cli, quick):
    run = tmp_path / "new"
    refused = cli(*quick, "mixer=poool", f"hydra.run.dir={run}")
    assert refused.code == 2 and len(refused.lines) == 1, refused.err
    record = json.loads((run / "results.json").read_text())
    assert record["status"] == "failed" and record["epochs"] == 0
    assert "unknown mixer 'poool'" in record["error"] and record["error"] in refused.lines[0]
    assert (
        record["model"] == "poolformer_cpu_patch4" and record["seed"] == 0
    )  # what the job was asked to train
    assert not (run / "last.pt").exists() and not (run / "metrics.csv").exists()
    excluded = excluded_runs(collect_runs([tmp_path]))
    assert list(excluded["status"]) == ["failed"] and "unknown mixer 'poool'" in excluded["reason"][0]
