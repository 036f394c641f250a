"""Training-step throughput of cheaper variants of the CPU preset (issue 10, target 1: what a smaller model buys).

    .venv/bin/python experiments/bench/cpu_preset_variants.py [--threads 2] [--batch-size 128] [--only TEXT ...]

Each variant is `create_model("poolformer_cpu", **changes)` trained on one random 28 px batch in float32 with
channels-last memory (the main job's settings) by the benchmark's training step (metaformer.bench, AdamW): 4 warm-up
steps, then images per second of wall time over 15 steps. The accuracy each variant reaches is a separate question (experiments/BENCHMARKS.md records the runs).
"""

from __future__ import annotations

import argparse

import torch

from metaformer import create_model, preset_config, profile
from metaformer.bench.throughput import Contender, make_step, time_steps
from metaformer.fast import Settings

# 4x4 patches, 7/4/2/1 px grids at 28 px: the stem of poolformer_cpu_patch4 (metaformer/presets.py)
STEM4 = {k: preset_config("poolformer_cpu_patch4")[k] for k in ("stem_kernel", "stem_stride", "stem_padding")}
VARIANTS: dict[str, dict] = {
    "poolformer_cpu": {},
    "depths (2,2,2,2)": {"depths": (2, 2, 2, 2)},
    "dims (24,48,96,160)": {"dims": (24, 48, 96, 160)},
    "dims (24,48,96,160), depths (2,2,2,2)": {"dims": (24, 48, 96, 160), "depths": (2, 2, 2, 2)},
    "mlp ratio 2": {"mlp_ratios": 2},
    "mlp ratio 3": {"mlp_ratios": 3},
    "4x4 stride-4 stem": STEM4,
    "7x7 stride-4 stem (the paper's)": {"stem_kernel": 7, "stem_stride": 4, "stem_padding": 2},
    "4x4 stem, depths (2,2,6,2)": {**STEM4, "depths": (2, 2, 6, 2)},
    "4x4 stem, dims (48,96,192,256)": {**STEM4, "dims": (48, 96, 192, 256)},
    "BN, ReLU": {"norm": "bn", "act": "relu"},
    "4x4 stem, BN, ReLU (the main job: poolformer_cpu_patch4, norm=bn act=relu)": {
        **STEM4,
        "norm": "bn",
        "act": "relu",
    },
}


def images_per_second(changes: dict, batch_size: int, steps: int = 15, warmup: int = 4) -> float:
    """Wall-clock training images/s of the CPU preset with `changes`, float32, channels-last (the benchmark's step)."""
    model = create_model("poolformer_cpu", **changes)
    x, y = torch.randn(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))
    step = make_step(Contender("variant", model, Settings("fp32", channels_last=True)), "train", x, y)
    time_steps(step, warmup, x.device)
    return steps * batch_size / time_steps(step, steps, x.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--only", nargs="*", help="the variants whose names contain one of these strings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| variant | params (M) | GMACs | train img/s ({args.threads} threads, batch {args.batch_size}) |")
    print("|---|---:|---:|---:|")
    only = [v for v in VARIANTS if any(k in v for k in args.only)] if args.only else list(VARIANTS)
    for name in only:
        changes = VARIANTS[name]
        stats = profile(create_model("poolformer_cpu", **changes))
        rate = images_per_second(changes, args.batch_size)
        print(f"| {name} | {stats['params_m']:.2f} | {stats['gmacs']:.4f} | {rate:.0f} |", flush=True)


if __name__ == "__main__":
    main()
