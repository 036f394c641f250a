"""`python tests/cli/rank_weights_run.py FOLDER ARGS...` (under torchrun): `python run.py ARGS`, after which every
rank saves its final weights as FOLDER/rank<R>.pt, so a test can check that all ranks ended with the same model."""

import sys
from pathlib import Path

import torch

from metaformer.engine.trainer import Trainer

if __name__ == "__main__":
    folder = Path(sys.argv[1])
    finish = Trainer._finish

    def finish_and_save(self: Trainer, status: str, **extra: object) -> dict:
        record = finish(self, status, **extra)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.step.module.state_dict(), folder / f"rank{self.dist.rank}.pt")
        return record

    Trainer._finish = finish_and_save
    import run

    run.cli(sys.argv[2:])
