"""`python tests/cli/signalling_run.py SIG@EPOCH.BATCH ARGS...`: `python run.py ARGS` whose synthetic data sends
the process SIG when batch BATCH of epoch EPOCH is read (see tests/signals.py), to stop a real process at an
exact point. The config is the same as run.py's with ARGS, so the same command through run.py resumes it."""

import sys

from tests.signals import register_signalling, signal_at

if __name__ == "__main__":
    register_signalling("synthetic", *signal_at(sys.argv[1]))
    import run

    run.cli(sys.argv[2:])
