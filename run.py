"""Train one MetaFormer from the command line; every setting is a Hydra override (see conf/ and README.md).

python run.py                                          # the main job: poolformer_cpu_patch4 on Fashion-MNIST
python run.py mixer=[pool,pool,attn,attn] norm=gn      # any mixer per stage, any norm / act
python run.py -m seed=0,1,2                            # a sweep (hydra/launcher=joblib: in parallel)
torchrun --nproc_per_node=8 run.py model=poolformer_s12 data=imagenet data.root=/data/imagenet
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from metaformer.engine import train
from metaformer.engine.command_line import check_argv, normalize_argv
from metaformer.engine.distributed import worker_overrides
from metaformer.errors import ConfigError, fail, report


@hydra.main(
    config_path=str(Path(__file__).resolve().parent / "conf"), config_name="config", version_base="1.3"
)
def main(cfg: DictConfig) -> float | None:
    """Train; return the best top-1 (what Hydra sweepers such as Optuna maximise)."""
    try:
        results = train(cfg)
    except ConfigError as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            report(str(e))
            raise  # Hydra records the job as failed and goes on with the rest of the sweep
        fail(str(e), e.exit_code)
    return results.get("best_top1")


def cli(argv: list[str] | None = None) -> None:
    """`python run.py ARGS`: check the arguments Hydra would refuse in several lines, then run `main`.
    Tests call it in-process with a list of arguments."""
    argv = normalize_argv(sys.argv[1:] if argv is None else list(argv))
    saved = sys.argv
    sys.argv = [str(Path(__file__).resolve()), *argv, *worker_overrides()]  # Hydra reads sys.argv
    try:
        check_argv(argv)
        main()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    cli()
