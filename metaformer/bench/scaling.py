"""`python -m metaformer.bench.scaling`: the cost of each token mixer as the number of tokens grows.

One MetaFormer block (norm, mixer, channel MLP) per registered mixer, at a fixed width, on feature maps from
7x7 to 56x56: forward+backward time and peak memory, as a table, a CSV and a log-log PNG. The fitted exponent
of time against tokens over the largest sizes shows the paper's complexity argument as measured numbers:
about 1 for pooling (linear in tokens), towards 2 for attention and the token-mixing MLP (quadratic).

    python -m metaformer.bench.scaling --out experiments/scaling
    python -m metaformer.bench.scaling --mixers pool attn mlp --sizes 7 14 28 --dim 64 --batch-size 8
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from metaformer.bench.command import bench_parser
from metaformer.bench.throughput import peak_memory_mib, synchronize, time_steps
from metaformer.block import MetaFormerBlock
from metaformer.errors import run_main
from mixers import list_mixers


def block_step(
    mixer: str, dim: int, size: int, batch_size: int, device: str, mixer_only: bool = False
) -> tuple[torch.nn.Module, torch.Tensor, Any]:
    """A block (or the mixer alone) bound to `size` x `size` tokens, an input, and one forward+backward step."""
    block = MetaFormerBlock(dim, mixer, resolution=(size, size))
    block = (block.token_mixer if mixer_only else block).to(device)
    x = torch.randn(batch_size, dim, size, size, device=device, requires_grad=True)

    def step() -> None:
        loss = block(x).float().square().mean()  # its gradient reaches every mixer, identity too
        loss.backward()
        block.zero_grad(set_to_none=True)
        x.grad = None

    return block, x, step


def measure(
    mixers: list[str],
    sizes: list[int],
    dim: int,
    batch_size: int,
    device: str,
    reps: int = 3,
    min_seconds: float = 0.2,
    mixer_only: bool = False,
) -> pd.DataFrame:
    """One row per (mixer, size): median milliseconds per forward+backward and peak MiB."""
    rows = []
    for mixer in mixers:
        for size in sizes:
            _, _, step = block_step(mixer, dim, size, batch_size, device, mixer_only)
            step()  # warm-up (and lazy initialisation)
            once = time_steps(step, 1, torch.device(device))
            iters = max(1, math.ceil(min_seconds / max(once, 1e-6)))
            times = [time_steps(step, iters, torch.device(device)) / iters for _ in range(reps)]
            rows.append(
                {
                    "mixer": mixer,
                    "size": size,
                    "tokens": size * size,
                    "ms": statistics.median(times) * 1e3,
                    "peak_mib": peak_memory_mib(step, torch.device(device)),
                }
            )
            synchronize(torch.device(device))
            print(f"{mixer:>9} {size:>3}x{size:<3} {rows[-1]['ms']:9.3f} ms", flush=True)
    return pd.DataFrame(rows)


def exponents(df: pd.DataFrame) -> pd.Series:
    """Per mixer, the slope of log(time) against log(tokens) between the two largest sizes."""

    def slope(g: pd.DataFrame) -> float:
        g = g.sort_values("tokens").tail(2)
        if len(g) < 2:
            return float("nan")
        (t0, t1), (m0, m1) = g["tokens"].to_numpy(), g["ms"].to_numpy()
        return math.log(m1 / m0) / math.log(t1 / t0)

    return df.groupby("mixer", sort=False)[["tokens", "ms"]].apply(slope).rename("exponent")


def table(df: pd.DataFrame) -> pd.DataFrame:
    """Milliseconds per forward+backward, mixers as rows, token counts as columns, plus the fitted exponent."""
    wide = df.pivot(index="mixer", columns="size", values="ms").reindex(df["mixer"].unique())
    wide.columns = [f"{s}x{s} ({s * s} tok) ms" for s in wide.columns]
    return wide.join(exponents(df)).round(3)


def plot(df: pd.DataFrame, path: Path, title: str) -> Path:
    """Log-log plots of time and peak memory against tokens, one line per mixer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for mixer, g in df.groupby("mixer", sort=False):
        axes[0].plot(g["tokens"], g["ms"], marker="o", label=mixer)
        if g["peak_mib"].notna().all() and (g["peak_mib"] > 0).all():
            axes[1].plot(g["tokens"], g["peak_mib"], marker="o", label=mixer)
    tokens = sorted(df["tokens"].unique())
    base = df[df["tokens"] == tokens[0]]["ms"].median()
    for power, style in ((1, ":"), (2, "--")):
        axes[0].plot(tokens, [base * (t / tokens[0]) ** power for t in tokens], "k" + style, lw=1,
                     label=f"~ tokens^{power}")  # fmt: skip
    for ax, ylabel in zip(axes, ("ms per forward+backward", "peak MiB (one step)"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens (H x W)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m metaformer.bench.scaling`: every flag with its help and default."""
    doc = __doc__ or ""
    p = bench_parser("python -m metaformer.bench.scaling", doc.split("\n")[0], doc.split("\n\n")[2])
    p.add_argument(
        "--mixers", nargs="+", default=None, metavar="MIXER",
        help=f"the token mixers to time (default: every registered one: {', '.join(list_mixers())})",
    )  # fmt: skip
    p.add_argument(
        "--sizes", nargs="+", type=int, default=[7, 14, 28, 56], metavar="SIDE",
        help="feature-map sides, in tokens (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--dim", type=int, default=64, help="channels of the block (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="feature maps per step (default: %(default)s)")
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu, cuda or cuda:N (default: cuda where there is one, else cpu; here %(default)s)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice, all cores)")
    p.add_argument(
        "--reps",
        type=int,
        default=3,
        help="timed repetitions; the figure is their median (default: %(default)s)",
    )
    p.add_argument(
        "--min-seconds", type=float, default=0.2,
        help="time at least this long per repetition (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--mixer-only", action="store_true", help="time the token mixer alone, not the whole block"
    )
    p.add_argument(
        "--out", type=Path, metavar="DIR",
        help="write scaling.md, scaling.csv and scaling.png into DIR (default: print the table only)",
    )  # fmt: skip
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line (see build_parser)."""
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mixers = args.mixers or list_mixers()
    unknown = sorted(set(mixers) - set(list_mixers()))
    if unknown:
        print(
            f"error: unknown mixer(s) {', '.join(unknown)}; choose from: {', '.join(list_mixers())}",
            file=sys.stderr,
        )
        return 2
    df = measure(
        mixers,
        args.sizes,
        args.dim,
        args.batch_size,
        args.device,
        args.reps,
        args.min_seconds,
        args.mixer_only,
    )
    wide = table(df)
    where = f"{args.device}, {torch.get_num_threads()} threads" if args.device == "cpu" else args.device
    part = "the token mixer alone" if args.mixer_only else "one block"
    title = f"{part}, dim {args.dim}, batch {args.batch_size}, float32, {where}"
    text = f"{title}\n\n{wide.to_markdown()}\n"
    print("\n" + text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out / "scaling.csv", index=False)
        (args.out / "scaling.md").write_text(text)
        print(
            f"wrote {args.out / 'scaling.csv'}, {args.out / 'scaling.md'}, {plot(df, args.out / 'scaling.png', title)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "python -m metaformer.bench.scaling"))
