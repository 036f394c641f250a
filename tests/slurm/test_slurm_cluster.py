"""The README's SLURM commands against a real slurmctld/slurmd on localhost (scripts/slurm-local.sh): a sweep
through hydra-submitit-launcher; jobs signalled before their time limit and requeued (the signal sent to a job's
steps, or to its batch script with trainer.requeue=true); a job cancelled outright and continued by the same
command; a failing job among others. Run with `pytest -m slurm` (the cluster needs root to start). The tests
wait on SLURM more than they compute, so `make test-slurm` runs them side by side (pytest-xdist); the cluster
queues their jobs on its CPUs."""

import csv
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


def test_a_sweep_runs_every_job_and_the_analysis_tables_them(slurm, tmp_path, analysis):
    proc = sweep(slurm, tmp_path, *TINY, "mixer=pool,identity", "seed=0,1", "hydra.sweep.dir=sweep")
    assert proc.returncode == 0, proc.stdout[-3000:]
    folders = sorted(p.name for p in (tmp_path / "sweep").iterdir() if not p.name.startswith("."))
    assert folders == ["0", "1", "2", "3", "multirun.yaml"]
    for job in range(4):
        assert {"results.json", "metrics.csv", "last.pt", ".hydra"} <= {
            p.name for p in (tmp_path / "sweep" / str(job)).iterdir()
        }
        assert results(tmp_path / "sweep" / str(job))["status"] == "completed"

    table = analysis(str(tmp_path / "sweep"), "--out", str(tmp_path / "report"))
    assert table.returncode == 0, table.stderr
    rows = list(csv.DictReader((tmp_path / "report" / "runs.csv").open()))
    assert sorted((r["mixers"], r["seed"], r["status"]) for r in rows) == [
        ("['identity', 'identity', 'identity', 'identity']", "0", "completed"),
        ("['identity', 'identity', 'identity', 'identity']", "1", "completed"),
        ("['pool', 'pool', 'pool', 'pool']", "0", "completed"),
        ("['pool', 'pool', 'pool', 'pool']", "1", "completed"),
    ]
    table_rows = [line for line in table.stdout.splitlines() if "mixer=" in line]
    assert len(table_rows) == 2 and all("|   2 |" in line for line in table_rows), table.stdout


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

    # Job 1 is cancelled in its second epoch; job 0 (one epoch) ends on its own, before the launcher returns
    # (it waits for job 0's result first), however the cluster orders the two.
    wait_until(lambda: epochs_done(cancelled) >= 1, "job 1's first epoch", proc=proc)
    subprocess.run(["scancel", job], env=slurm, check=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out[-3000:]  # the launcher reports the job that did not finish
    assert results(done)["status"] == "completed"
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


def test_a_failing_job_does_not_stop_the_others(slurm, tmp_path):
    # Job 0 names a mixer that does not exist; it fails at once, while job 1 trains on.
    proc = sweep(slurm, tmp_path, *TINY, "mixer=poool,pool", "hydra.sweep.dir=sweep")
    assert proc.returncode != 0 and "unknown mixer 'poool'" in proc.stdout, proc.stdout[-3000:]
    good = slurm_job(tmp_path / "sweep", 1)
    wait_for_jobs(slurm, good)  # the launcher stops at job 0's error; SLURM runs job 1 to its end regardless
    assert sacct_states(slurm, good)[-1] == "COMPLETED"
    failed = results(tmp_path / "sweep" / "0")
    assert failed["status"] == "failed" and "unknown mixer 'poool'" in failed["error"]
    assert results(tmp_path / "sweep" / "1")["status"] == "completed"
    assert results(tmp_path / "sweep" / "1")["epochs"] == 1
