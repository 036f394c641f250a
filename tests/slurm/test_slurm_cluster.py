"""The README's SLURM commands against a real slurmctld/slurmd on localhost (scripts/slurm-local.sh): a sweep
through hydra-submitit-launcher, one of whose jobs fails; jobs signalled before their time limit and requeued
(the signal sent to a job's steps, or to its batch script with trainer.requeue=true); a job cancelled outright
and continued by the same command. Run with `pytest -m slurm` (the cluster needs root to start). The tests wait
on SLURM more than they compute, so `make test-slurm` runs them side by side (pytest-xdist); the cluster queues
their jobs on its CPUs. Each job and each sweep is a process that imports torch and timm (about 5 s of CPU), so
the tests share sweeps where they can."""

import csv
import signal
import subprocess
import time

import pytest
from slurm_helpers import (
    LONGER,
    ROOT,
    TINY,
    epochs_done,
    results,
    sacct_states,
    slurm_job,
    start_sweep,
    sweep,
    wait_for_jobs,
    wait_until,
)

pytestmark = pytest.mark.slurm


@pytest.fixture
def analysis(capsys, monkeypatch):
    """`python -m analysis ARGS` in this process (its own process is tests/analysis' test): a CompletedProcess."""
    from analysis.__main__ import main

    monkeypatch.chdir(ROOT)

    def call(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["python", "-m", "analysis", *args], code, out, err)

    return call


def test_a_sweep_runs_every_job_a_failing_one_stops_no_other_and_the_analysis_tables_them(
    slurm, tmp_path, analysis
):
    # Job 0 names a mixer that does not exist: it fails at once, and the launcher, which collects the jobs'
    # results in order, stops there with its error; SLURM runs jobs 1 and 2 to their end regardless.
    proc = sweep(slurm, tmp_path, *TINY, "mixer=poool,pool,identity", "hydra.sweep.dir=sweep")
    assert proc.returncode != 0 and "unknown mixer 'poool'" in proc.stdout, proc.stdout[-3000:]
    array = slurm_job(tmp_path / "sweep", 1).partition("_")[0]
    wait_for_jobs(slurm, array)
    assert [sacct_states(slurm, f"{array}_{job}")[-1] for job in (1, 2)] == ["COMPLETED", "COMPLETED"]
    folders = sorted(p.name for p in (tmp_path / "sweep").iterdir() if not p.name.startswith("."))
    assert folders == ["0", "1", "2", "multirun.yaml"]
    failed = results(tmp_path / "sweep" / "0")
    assert failed["status"] == "failed" and "unknown mixer 'poool'" in failed["error"]
    for job in (1, 2):
        assert {"results.json", "metrics.csv", "last.pt", ".hydra"} <= {
            p.name for p in (tmp_path / "sweep" / str(job)).iterdir()
        }
        assert results(tmp_path / "sweep" / str(job))["status"] == "completed"
        assert results(tmp_path / "sweep" / str(job))["epochs"] == 1

    table = analysis(str(tmp_path / "sweep"), "--out", str(tmp_path / "report"))
    assert table.returncode == 0, table.stderr
    rows = list(csv.DictReader((tmp_path / "report" / "runs.csv").open()))
    assert sorted((r["mixers"], r["status"]) for r in rows if r["status"] == "completed") == [
        ("['identity', 'identity', 'identity', 'identity']", "completed"),
        ("['pool', 'pool', 'pool', 'pool']", "completed"),
    ]
    assert [r["status"] for r in rows].count("failed") == 1
    averaged = table.stdout.partition("Runs not in the averages")[0]
    table_rows = [line for line in averaged.splitlines() if line.startswith("| mixer=")]
    assert [[cell.strip() for cell in row.split("|")[1:3]] for row in table_rows] == [
        ["mixer=poool", "0"],  # its run failed: a row without numbers, the run listed below the table
        ["mixer=pool", "1"],
        ["mixer=identity", "1"],
    ], table.stdout


def signal_each_after_its_first_epoch(env, proc, signals, timeout=300):
    """`scancel --signal=USR2 [--batch] JOB` for each (run folder, job, extra scancel options) of `signals` as
    soon as that run has finished its first epoch (so it is signalled in its second)."""
    waiting, deadline = list(signals), time.monotonic() + timeout
    while waiting:
        for item in [w for w in waiting if epochs_done(w[0]) >= 1]:
            subprocess.run(["scancel", "--signal=USR2", *item[2], item[1]], env=env, check=True)
            waiting.remove(item)
        if waiting:
            if proc.poll() is not None:
                raise AssertionError(f"the sweep ended before the signals:\n{proc.stdout.read()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for the first epoch of {[w[0].name for w in waiting]}"
                )
            time.sleep(0.2)


def test_jobs_signalled_before_their_time_limit_are_requeued_and_end_as_if_never_stopped(slurm, tmp_path):
    """Jobs 0, 1 and 2 are the same run (trainer.requeue only acts on a signal); each of 0 and 1 gets submitit's
    USR2 in its second epoch. Job 0's is delivered to the job's steps, as `#SBATCH --signal=USR2@N` does ahead of
    the time limit: submitit requeues it. Job 1's goes to its batch script, the README's advice for sites that
    signal the batch script: the shell dies, SLURM stops the step with SIGTERM, and the run, after saving,
    requeues its own job (trainer.requeue=true). Job 2 is left alone."""
    proc = start_sweep(slurm, tmp_path, *LONGER, "trainer.epochs=3", "trainer.requeue=false,true,false",
                       "hydra.sweep.dir=sweep")  # fmt: skip
    steps, batch, reference = (tmp_path / "sweep" / str(i) for i in range(3))
    steps_job, batch_job = slurm_job(tmp_path / "sweep", 0), slurm_job(tmp_path / "sweep", 1)
    signal_each_after_its_first_epoch(slurm, proc, [(steps, steps_job, []), (batch, batch_job, ["--batch"])])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    uninterrupted = results(reference)

    # The signal to the steps: submitit's handler checkpoints and requeues.
    assert "REQUEUED" in sacct_states(slurm, steps_job) and sacct_states(slurm, steps_job)[-1] == "COMPLETED"
    log = (steps / "run.log").read_text()
    assert "Caught signal SIGUSR2" in log and "preempted: 1 epochs" in log  # submitit's line, then ours
    assert "Requeued job" in log and f"resumed from {steps / 'last.pt'}" in log
    signalled = results(steps)
    assert signalled["status"] == "completed" and signalled["epochs"] == 3
    for key in ("top1", "top5", "loss", "best_top1"):
        assert signalled[key] == uninterrupted[key], key

    # The signal to the batch script: the run requeues its own job.
    assert (
        sacct_states(slurm, batch_job)[0] == "REQUEUED" and sacct_states(slurm, batch_job)[-1] == "COMPLETED"
    )
    log = (batch / "run.log").read_text()
    assert "requeueing SLURM job" in log and f"resumed from {batch / 'last.pt'}" in log
    assert results(batch)["status"] == "completed" and results(batch)["epochs"] == 3
    assert results(batch)["top1"] == uninterrupted["top1"] and results(batch)["loss"] == uninterrupted["loss"]


def test_a_cancelled_job_is_listed_and_the_same_command_continues_it(slurm, tmp_path, analysis):
    command = [*LONGER, "trainer.epochs=1,3", "hydra.sweep.dir=sweep"]
    proc = start_sweep(slurm, tmp_path, *command)
    done, cancelled = tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"
    job = slurm_job(tmp_path / "sweep", 1)

    # Job 1 is cancelled in its second epoch; job 0 (one epoch) ends on its own. The user then stops the waiting
    # launcher (Ctrl-C): submitit's launcher would notice the cancellation only at its next sacct poll, which
    # backs off to a minute.
    wait_until(lambda: epochs_done(cancelled) >= 1, "job 1's first epoch", proc=proc)
    subprocess.run(["scancel", job], env=slurm, check=True)
    wait_until(lambda: (done / "results.json").exists() and results(done)["status"] == "completed", "job 0")
    wait_until(lambda: results(cancelled)["status"] == "preempted", "job 1's preempted status")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out[-3000:]
    assert sacct_states(slurm, job)[-1] == "CANCELLED"
    assert results(cancelled)["status"] == "preempted" and results(cancelled)["signal"] == "SIGTERM"

    table = analysis(str(tmp_path / "sweep"))
    assert table.returncode == 0, table.stderr
    listed = [line for line in table.stdout.splitlines() if str(cancelled) in line]
    assert len(listed) == 1 and "preempted" in listed[0], table.stdout

    finished_metrics, finished_top1 = (done / "metrics.csv").read_text(), results(done)["top1"]
    again = sweep(slurm, tmp_path, *command)
    assert again.returncode == 0, again.stdout[-3000:]
    assert results(cancelled)["status"] == "completed" and results(cancelled)["epochs"] == 3
    assert epochs_done(cancelled) == 3 and "resumed from" in (cancelled / "run.log").read_text()
    # the finished job is not trained again: the same epochs, the same result
    assert (done / "metrics.csv").read_text() == finished_metrics and results(done)["top1"] == finished_top1
