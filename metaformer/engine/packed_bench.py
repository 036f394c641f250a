"""Throughput of packed seeds: K seeds as one vmapped model (`packing.PackedStepper`) against the same K seeds
trained one after another, in one process, on identical random batches, the order alternating round by round.

    python -m metaformer.engine.packed_bench                       # poolformer_cpu, 28 px, batch 128, K=4, CPU
    python -m metaformer.engine.packed_bench --device cuda --k 8 --steps 50
    python -m metaformer.engine.packed_bench --clock cpu --threads 1   # by the process's CPU time (shared CPUs)

A training step is the mini experiment's (conf/experiment/mini.yaml): float32, channels-last, AdamW (timm's, with
weight decay 0.05 off norms and biases), cross-entropy. Each round times `--steps` packed steps (K x batch images
each) and `--steps` steps of each of the K separate models; the ratio is separate time / packed time (above 1: the
pack is faster), reported as the median over rounds with each side's images/s.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable

import torch
from timm.optim import create_optimizer_v2
from torch import nn

from metaformer import create_model
from metaformer.engine.packing import PackedStepper, stack_images


def _clock(kind: str, device: torch.device) -> Callable[[], float]:
    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.process_time() if kind == "cpu" else time.perf_counter()

    return now


def measure(
    model: str = "poolformer_cpu",
    k: int = 4,
    batch_size: int = 128,
    img_size: int = 28,
    steps: int = 10,
    rounds: int = 6,
    device: str = "cpu",
    clock: str = "wall",
    channels_last: bool = True,
) -> dict:
    """Time K packed seeds against K separate ones; return images/s of each (median over rounds) and the
    median ratio separate time / packed time."""
    dev = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(create_model(model, img_size=img_size).to(dev, memory_format=fmt).train())
    in_chans = models[0].stem.conv.in_channels if hasattr(models[0].stem, "conv") else 1
    classes = models[0].num_classes
    optimizers = [create_optimizer_v2(m, opt="adamw", lr=2e-3, weight_decay=0.05) for m in models]
    packed_models = [copy.deepcopy(m) for m in models]
    packed_optimizers = [
        create_optimizer_v2(m, opt="adamw", lr=2e-3, weight_decay=0.05) for m in packed_models
    ]
    loss_fn = nn.CrossEntropyLoss()
    pack = PackedStepper(packed_models, packed_optimizers, loss_fn, channels_last=channels_last)
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch_size, in_chans, img_size, img_size, generator=gen).to(dev, memory_format=fmt) for _ in range(k)]  # fmt: skip
    ys = [torch.randint(0, classes, (batch_size,), generator=gen).to(dev) for _ in range(k)]
    x, y = stack_images(xs, channels_last), torch.stack(ys)

    def packed_steps(n: int) -> None:
        for _ in range(n):
            pack.losses(x, y).sum().backward()
            pack.step()

    def separate_steps(n: int) -> None:
        for m, opt, xk, yk in zip(models, optimizers, xs, ys, strict=True):
            for _ in range(n):
                loss_fn(m(xk), yk).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

    now = _clock(clock, dev)
    packed_steps(2)  # warm-up: allocator, oneDNN/cuDNN kernel choice
    separate_steps(2)
    times: dict[str, list[float]] = {"packed": [], "separate": []}
    for r in range(rounds):
        order = [("packed", packed_steps), ("separate", separate_steps)]
        for name, run in order if r % 2 == 0 else order[::-1]:
            t0 = now()
            run(steps)
            times[name].append(now() - t0)
    images = k * batch_size * steps
    ratios = [s / p for s, p in zip(times["separate"], times["packed"], strict=True)]
    return {
        "model": model, "k": k, "batch_size": batch_size, "img_size": img_size, "steps": steps, "rounds": rounds,
        "device": str(dev), "clock": clock, "threads": torch.get_num_threads(), "channels_last": channels_last,
        "packed_img_per_s": round(images / statistics.median(times["packed"]), 1),
        "separate_img_per_s": round(images / statistics.median(times["separate"]), 1),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m metaformer.engine.packed_bench",
        description="Training throughput of K packed seeds (one vmapped model) vs the K seeds one after another.",
    )
    p.add_argument("--model", default="poolformer_cpu", help="model preset (default: poolformer_cpu)")
    p.add_argument("--k", type=int, default=4, help="seeds in the pack (default: 4)")
    p.add_argument("--batch-size", type=int, default=128, help="batch per seed (default: 128)")
    p.add_argument("--img-size", type=int, default=28, help="image size (default: 28)")
    p.add_argument("--steps", type=int, default=10, help="steps per seed per round (default: 10)")
    p.add_argument("--rounds", type=int, default=6, help="rounds, the order alternating (default: 6)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall or process CPU time")
    p.add_argument("--nchw", action="store_true", help="NCHW memory instead of channels-last")
    p.add_argument("--json", default=None, help="also write the result to this file")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    result = measure(a.model, a.k, a.batch_size, a.img_size, a.steps, a.rounds, a.device, a.clock, not a.nchw)
    print(json.dumps(result))
    print(
        f"{a.model} at {a.img_size} px, batch {a.batch_size}, K={a.k} on {result['device']} "
        f"({result['threads']} threads, {a.clock} clock): packed {result['packed_img_per_s']} img/s, separate "
        f"{result['separate_img_per_s']} img/s, ratio separate/packed time {result['ratio_median']} (median of "
        f"{a.rounds} rounds: {result['ratios']})"
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
