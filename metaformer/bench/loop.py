"""`python -m metaformer.bench.loop`: the training loop's images/s against a bare step loop on the same data.

The loop (`metaformer.engine.loop.train_one_epoch`, fed by the engine's in-memory loader with its batching and
augmentation) and a bare loop (forward, loss, backward, optimizer step over batches already in memory) train the
same model in turn, A B A B; the ratio loop/bare says how much the data path and the loop's bookkeeping cost.

    python -m metaformer.bench.loop                          # the main job's config (conf/config.yaml)
    python -m metaformer.bench.loop trainer.precision=fp32 --batches 50 --rounds 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from metaformer.bench.command import bench_parser
from metaformer.engine.data import build_data
from metaformer.engine.loop import Stepper, train_one_epoch
from metaformer.engine.parts import run_settings
from metaformer.engine.validation import validate
from metaformer.errors import run_main
from metaformer.fast import autocast, prepare_input, prepare_model
from metaformer.presets import create_model

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def load_config(overrides: list[str]) -> DictConfig:
    """The config `python run.py OVERRIDES` would train with."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def bench(cfg: DictConfig, batches: int, rounds: int, device: str = "cpu") -> dict[str, Any]:
    """Images/s of the engine's loop and of a bare loop, interleaved for `rounds` rounds of `batches` steps."""
    t = cfg.trainer
    spec = validate(cfg)
    data = build_data(cfg.data, cfg.get("aug"), t.batch_size, t.batch_size, cfg.seed, device=device)
    sized = {"num_classes": data.num_classes, "in_chans": data.in_chans, "img_size": data.img_size}
    module = create_model(cfg.model.name, **{**sized, **spec.model_kwargs}).to(device)
    settings = run_settings(t, torch.device(device))  # as run.py would train: precision auto, trainer.fast
    model = prepare_model(module, settings)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    stepper = Stepper(
        model=model, module=module, optimizer=optimizer, loss_fn=F.cross_entropy, device=torch.device(device),
        precision=settings.precision, channels_last=settings.channels_last,
    )  # fmt: skip
    fixed = [
        (prepare_input(x.to(device), settings), y.to(device))
        for x, y in itertools.islice(data.train, batches)
    ]
    batch_images = sum(len(x) for x, _ in fixed)

    def bare() -> float:
        module.train()
        start = time.perf_counter()
        for x, y in fixed:
            with autocast(settings.precision, device):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        loss.item()
        return batch_images / (time.perf_counter() - start)

    def engine() -> float:
        return train_one_epoch(stepper, data.train, batches).img_per_s

    bare(), engine()  # warm-up
    loop_ips, bare_ips = [], []
    for _ in range(rounds):
        loop_ips.append(engine())
        bare_ips.append(bare())
    ratios = [a / b for a, b in zip(loop_ips, bare_ips, strict=True)]
    return {
        "model": cfg.model.name,
        "data": data.name,
        "batch_size": t.batch_size,
        "precision": settings.precision,
        "settings": settings.describe(),
        "threads": torch.get_num_threads(),
        "batches_per_round": batches,
        "loop_img_per_s": [round(v, 1) for v in loop_ips],
        "bare_img_per_s": [round(v, 1) for v in bare_ips],
        "ratios": [round(r, 3) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m metaformer.bench.loop`: every flag with its help and default."""
    doc = __doc__ or ""
    p = bench_parser("python -m metaformer.bench.loop", doc.split("\n")[0], doc.split("\n\n")[2])
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="Hydra overrides, as for run.py (default: none: the main job's config)",
    )  # fmt: skip
    p.add_argument("--batches", type=int, default=100, help="steps per loop per round (default: %(default)s)")
    p.add_argument(
        "--rounds", type=int, default=3,
        help="rounds of the two loops in turn; the ratio is their median (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice, all cores)")
    p.add_argument(
        "--json", type=Path, metavar="FILE", help="also write the figures to FILE (default: print only)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    record = bench(load_config(args.overrides), args.batches, args.rounds, args.device)
    print(
        f"{record['model']} on {record['data']}, batch {record['batch_size']}, {record['settings']}, "
        f"{record['threads']} threads: loop {statistics.median(record['loop_img_per_s']):.1f} img/s, "
        f"bare {statistics.median(record['bare_img_per_s']):.1f} img/s, "
        f"loop/bare {record['median_ratio']:.3f} (rounds {record['ratios']})"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "python -m metaformer.bench.loop"))
