"""`python -m metaformer.bench.depthwise`: training steps with depthwise convolutions on small maps as a
per-channel matrix (mixers.conv.DepthwiseConv2d's CPU path) against torch's convolution, in one process.

Each layout is built once; its twin (a deep copy, the same weights) has `small_map_matmul` off. The two train in
turn, the order reversed every round (metaformer.bench.throughput.compare); the figure to quote is the median of
the per-round ratios, matrix over convolution.

    python -m metaformer.bench.depthwise --json experiments/bench/cpu_avx512bf16_depthwise.json
    python -m metaformer.bench.depthwise --layout sepconv,fft,sepconv,sepconv --rounds 4
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import torch

from metaformer.bench.command import bench_parser
from metaformer.bench.throughput import Contender, compare, summary
from metaformer.errors import run_main
from metaformer.fast import Settings
from metaformer.presets import create_model
from mixers.conv import DepthwiseConv2d

LAYOUTS = [
    "sepconv,sepconv,sepconv,sepconv",
    "sepconv,fft,sepconv,sepconv",
    "attn,dwconv,sepconv,sepconv",
    "dwconv,dwconv,dwconv,dwconv",
]


def without_matmul(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` (the same weights) whose depthwise convolutions always convolve."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if isinstance(m, DepthwiseConv2d):
            m.small_map_matmul = False
    return twin


def bench_layout(layout: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Training throughput of one mixer layout, matrix path against convolution."""
    torch.manual_seed(0)
    model = create_model(args.model, mixer=layout, in_chans=args.in_chans, num_classes=10)
    settings = Settings(precision="fp32", channels_last=True)
    contenders = [Contender("matrix", model, settings), Contender("conv", without_matmul(model), settings)]
    x = torch.randn(args.batch_size, args.in_chans, args.img_size, args.img_size)
    y = torch.randint(0, 10, (args.batch_size,))
    outcomes = compare(contenders, "train", x, y, rounds=args.rounds, iters=args.iters)
    record = summary("train", outcomes, reference=1)
    record["layout"] = layout
    return record


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m metaformer.bench.depthwise`: every flag with its help and default."""
    doc = __doc__ or ""
    p = bench_parser("python -m metaformer.bench.depthwise", doc.split("\n\n")[0], doc.split("\n\n")[2])
    p.add_argument("--model", default="poolformer_cpu", help="model preset (default: %(default)s)")
    p.add_argument(
        "--layout",
        action="append",
        metavar="M1,M2,M3,M4",
        help=f"mixers per stage, repeatable (default: {LAYOUTS})",
    )
    p.add_argument("--batch-size", type=int, default=128, help="images a step (default: %(default)s)")
    p.add_argument(
        "--img-size", type=int, default=28, help="image side (default: %(default)s, Fashion-MNIST)"
    )
    p.add_argument("--in-chans", type=int, default=1, help="image channels (default: %(default)s)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (default: %(default)s, as a mini run)"
    )
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default: %(default)s)")
    p.add_argument("--iters", type=int, default=3, help="steps a round and contender (default: %(default)s)")
    p.add_argument(
        "--json", type=Path, metavar="FILE", help="write the figures to FILE (default: print only)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    records = []
    for text in args.layout or LAYOUTS:
        record = bench_layout(text.split(","), args)
        records.append(record)
        matrix = record["rows"][0]
        print(
            f"{text:<36} matrix/conv {matrix['median_ratio']:.3f}  ({matrix['median_img_per_s']:.0f} img/s)"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "threads": args.threads,
            "batch_size": args.batch_size,
            "img_size": args.img_size,
            "layouts": records,
        }
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "python -m metaformer.bench.depthwise"))
