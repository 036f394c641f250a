"""Train one MetaFormer from the command line; every setting is a Hydra override (see conf/ and README.md).

python run.py                                          # the main job: poolformer_cpu on Fashion-MNIST
python run.py mixer=[pool,pool,attn,attn] norm=gn      # any mixer per stage, any norm / act
python run.py -m seed=0,1,2                            # a sweep (hydra/launcher=joblib: in parallel)
torchrun --nproc_per_node=8 run.py model=poolformer_s12 data=imagenet data.root=/data/imagenet
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from metaformer.engine import ConfigError, train
from metaformer.engine.config import check_argv, fail, report
from metaformer.engine.distributed import worker_overrides


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
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


if __name__ == "__main__":
    check_argv(sys.argv[1:])
    sys.argv += worker_overrides()
    main()
