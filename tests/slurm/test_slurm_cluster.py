"""The README's SLURM commands against a real slurmctld/slurmd on localhost (scripts/slurm-local.sh): a sweep
through hydra-submitit-launcher; a job signalled before its time limit and requeued (the signal sent to its steps,
or to its batch script with trainer.requeue=true); a job cancelled outright and continued by the same command; a
failing job among others. Run with `pytest -m slurm` (the cluster needs root to start)."""

import csv
import subprocess
import sys

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


def analysis(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_sweep_runs_every_job_and_the_analysis_tables_them(slurm, tmp_path):
    proc = sweep(slurm, tmp_path, *TINY, "mixer=pool,identity", "seed=0,1", "hydra.sweep.dir=sweep")
    assert proc.returncode == 0, proc.stdout[-3000:]
    folders = sorted(p.name for p in (tmp_path / "sweep").iterdir() if not p.name.startswith("."))
    assert folders == ["0", "1", "2", "3", "multirun.yaml"]
    for job in range(4):
        assert {"results.json", "metrics.csv", "last.pt", ".hydra"} <= {
            p.name for p in (tmp_path / "sweep" / str(job)).iterdir()
        }
        assert results(tmp_path / "sweep" / str(job))["status"] == "completed"

    table = analysis(slurm, str(tmp_path / "sweep"), "--out", str(tmp_path / "report"))
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


def test_a_job_signalled_before_its_time_limit_is_requeued_and_ends_as_if_never_stopped(slurm, tmp_path):
    # Jobs 0 and 1 are the same run; job 0 gets submitit's USR2 in its second epoch, delivered to the job's
    # steps as `#SBATCH --signal=USR2@N` does ahead of the time limit.
    proc = start_sweep(slurm, tmp_path, *LONGER, "trainer.epochs=3", "seed=0,0", "hydra.sweep.dir=sweep")
    run, reference = tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"
    job = slurm_job(tmp_path / "sweep", 0)
    wait_until(lambda: epochs_done(run) >= 1, "job 0's first epoch", proc=proc)
    subprocess.run(["scancel", "--signal=USR2", job], env=slurm, check=True)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]

    assert "REQUEUED" in sacct_states(slurm, job) and sacct_states(slurm, job)[-1] == "COMPLETED"
    log = (run / "run.log").read_text()
    assert "Caught signal SIGUSR2" in log and "preempted: 1 epochs" in log  # submitit's line, then ours
    assert "Requeued job" in log and f"resumed from {run / 'last.pt'}" in log
    signalled, uninterrupted = results(run), results(reference)
    assert signalled["status"] == "completed" and signalled["epochs"] == 3
    for key in ("top1", "top5", "loss", "best_top1"):
        assert signalled[key] == uninterrupted[key], key


def test_where_the_batch_script_gets_the_signal_trainer_requeue_requeues_the_job(slurm, tmp_path):
    # The README's advice for sites that signal the batch script: the shell dies, SLURM stops the step with
    # SIGTERM, and the run, after saving, requeues its own job (trainer.requeue=true).
    proc = start_sweep(slurm, tmp_path, *LONGER, "trainer.epochs=3", "trainer.requeue=true", "seed=0,0",
                       "hydra.sweep.dir=sweep")  # fmt: skip
    run, reference = tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"
    job = slurm_job(tmp_path / "sweep", 0)
    wait_until(lambda: epochs_done(run) >= 1, "job 0's first epoch", proc=proc)
    subprocess.run(["scancel", "--signal=USR2", "--batch", job], env=slurm, check=True)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]

    assert sacct_states(slurm, job)[0] == "REQUEUED" and sacct_states(slurm, job)[-1] == "COMPLETED"
    log = (run / "run.log").read_text()
    assert "requeueing SLURM job" in log and f"resumed from {run / 'last.pt'}" in log
    assert results(run)["status"] == "completed" and results(run)["epochs"] == 3
    assert (
        results(run)["top1"] == results(reference)["top1"]
        and results(run)["loss"] == results(reference)["loss"]
    )


def test_a_cancelled_job_is_listed_and_the_same_command_continues_it(slurm, tmp_path):
    command = [*LONGER, "trainer.epochs=1,3", "hydra.sweep.dir=sweep"]
    proc = start_sweep(slurm, tmp_path, *command)
    done, cancelled = tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"
    job = slurm_job(tmp_path / "sweep", 1)

    def first_done_and_second_training():
        return (
            epochs_done(cancelled) >= 1
            and (done / "results.json").exists()
            and (results(done)["status"] == "completed")
        )

    wait_until(first_done_and_second_training, "job 0 to end and job 1's first epoch", proc=proc)
    subprocess.run(["scancel", job], env=slurm, check=True)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out[-3000:]  # the launcher reports the job that did not finish
    assert sacct_states(slurm, job)[-1] == "CANCELLED"
    assert results(cancelled)["status"] == "preempted" and results(cancelled)["signal"] == "SIGTERM"

    table = analysis(slurm, str(tmp_path / "sweep"))
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
