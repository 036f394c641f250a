"""`python -m metaformer.bench`: images/s of our model against timm's, in one process, on identical inputs.

    python -m metaformer.bench                                   # S12 at 224: timm fp32, ours fp32
    python -m metaformer.bench --fast --timm-same                # + ours on the fast path, + timm on the same
    python -m metaformer.bench --mode train --batch-size 32 --json bench.json
    python -m metaformer.bench --fast --profile 10               # + each row's top 10 operators
    python -m metaformer.bench --model poolformer_s12 --mixer pool pool attn attn   # no timm twin: ours only

Rows: timm's model in eager float32 (the reference, where timm has the same architecture), ours with the
given settings, and with `--fast` ours on the fast path (`metaformer.fast`). Ratios are to the reference (timm's
twin; without one, ours with the given settings), per interleaved round; their median is the figure to quote.
On a machine shared with other jobs, `--threads 1 --clock cpu` times by CPU time, which other jobs barely move.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from metaformer import list_acts, list_norms
from metaformer.bench.command import bench_parser
from metaformer.bench.throughput import Contender, compare, logits_agreement, matmul_peak_gflops, summary
from metaformer.errors import run_main
from metaformer.fast import AUTOCAST_DTYPES, Settings, bf16_supported, fast_settings, with_overrides
from metaformer.presets import create_model, list_models, preset_config
from metaformer.profile import profile
from mixers import list_mixers

# FLOPs of a training step per forward FLOP: forward, and backward's two products (input and weight gradients)
TRAIN_FLOP_FACTOR = 3

TIMM_TWINS = {"poolformer_s12", "poolformer_s24", "poolformer_s36", "poolformer_m36", "poolformer_m48"}
# poolformer_cpu's reference: timm's MetaFormer class with the same stages, fed images twice the size so that its
# fixed 7x7 stride-4 stem gives the same token grids (28 px through our stride-2 stem: 14/7/4/2; 56 px: the same).
TIMM_CPU_TWIN = "poolformer_cpu"


def timm_twin(model: str, mixer: list[str] | None, norm: str | None, act: str | None) -> str | None:
    """The timm model with our model's architecture (timm's PoolFormer v1), or None where timm has none."""
    if model not in TIMM_TWINS | {TIMM_CPU_TWIN}:
        return None
    mixers = set(mixer or ["pool"])
    return model if mixers == {"pool"} and norm in (None, "gn") and act in (None, "gelu") else None


def build_timm_twin(name: str, drop_path_rate: float) -> tuple[torch.nn.Module, int | None]:
    """timm's model for `name` and the input side it needs (None: the same input as ours)."""
    if name != TIMM_CPU_TWIN:
        import timm

        return timm.create_model(name, drop_path_rate=drop_path_rate), None
    from timm.models.metaformer import GroupNorm1, MetaFormer, Pooling

    cfg = preset_config(name)
    model = MetaFormer(
        in_chans=cfg["in_chans"],
        num_classes=cfg["num_classes"],
        depths=cfg["depths"],
        dims=cfg["dims"],
        token_mixers=Pooling,
        mlp_act=torch.nn.GELU,
        mlp_bias=True,
        norm_layers=GroupNorm1,
        output_norm=GroupNorm1,
        layer_scale_init_values=cfg["layer_scale_init"],
        res_scale_init_values=None,
        downsample_norm=None,
        use_mlp_head=False,
        drop_path_rate=drop_path_rate,
    )
    return model, 2 * cfg["img_size"]


def machine(device: str = "cpu") -> str:
    """The GPU, or the processor with its vector instructions and threads, and torch's version, for the record."""
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    name = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    isa = torch.backends.cpu.get_cpu_capability()  # the vector ISA torch dispatches to: AVX2, AVX512, ...
    bf16 = "native bf16" if bf16_supported("cpu") else "no native bf16"
    return f"{name} ({isa}, {bf16}), {torch.get_num_threads()} threads, torch {torch.__version__}"


def names(registered: list[str]) -> str:
    """A registry's names for a help string (argparse's `%` escaped)."""
    return ", ".join(registered).replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m metaformer.bench`: every flag with its help, its default and its choices."""
    doc = __doc__ or ""
    p = bench_parser(
        "python -m metaformer.bench",
        doc.split("\n")[0],
        doc.split("\n\n")[1] + "\n\n" + doc.split("\n\n", 2)[2],
    )
    p.add_argument(
        "--model", default="poolformer_s12", choices=list_models(), metavar="NAME",
        help="the preset to build (default: %(default)s; choices: %(choices)s)",
    )  # fmt: skip
    p.add_argument(
        "--mixer", nargs="+", metavar="MIXER",
        help="one token mixer for all stages, or one per stage "
        f"(default: the preset's; registered: {names(list_mixers())})",
    )  # fmt: skip
    p.add_argument(
        "--norm", metavar="NORM",
        help=f"the norm layers (default: the preset's; registered: {names(list_norms())})",
    )  # fmt: skip
    p.add_argument(
        "--act", metavar="ACT",
        help=f"the channel MLP's activation (default: the preset's; registered: {names(list_acts())})",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=16, help="images per step (default: %(default)s)")
    p.add_argument("--img-size", type=int, help="input side in pixels (default: the preset's, 224 for S12)")
    p.add_argument(
        "--mode", choices=["infer", "train", "both"], default="both",
        help="time inference (forward), training steps, or both (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--precision", choices=list(AUTOCAST_DTYPES), default="fp32",
        help="our model's precision, besides --fast (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--channels-last", action="store_true", help="our model in channels-last memory, besides --fast"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile our model, besides --fast")
    p.add_argument(
        "--fast", action="store_true", help="add a row: our model on the fast path (metaformer.fast)"
    )
    p.add_argument(
        "--fast-compile", choices=["auto", "on", "off"], default="auto",
        help="torch.compile in --fast (default: %(default)s: where a compiler is there)",
    )  # fmt: skip
    p.add_argument(
        "--fast-precision", choices=["auto", *AUTOCAST_DTYPES], default="auto",
        help="precision in --fast (default: %(default)s: bf16 where native, else fp32)",
    )  # fmt: skip
    p.add_argument(
        "--timm-same", action="store_true", help="add a row: timm's model with the fast path's settings"
    )
    p.add_argument("--no-timm", action="store_true", help="leave timm's model out")
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu, cuda or cuda:N (default: cuda where there is one, else cpu; here %(default)s)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice, all cores)")
    p.add_argument(
        "--warmup", type=int, default=2, help="untimed steps per contender first (default: %(default)s)"
    )
    p.add_argument(
        "--rounds", type=int, default=5,
        help="interleaved timed rounds; the figures are their medians (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--iters", type=int, default=2, help="steps per contender per round (default: %(default)s)"
    )
    p.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall",
        help="wall time, or this process's CPU time (with --threads 1, on a machine shared with other jobs) "
        "(default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the weights and inputs (default: %(default)s)"
    )
    p.add_argument("--peak", action="store_true", help="also measure the device's matrix-product GFLOP/s")
    p.add_argument(
        "--profile", type=int, default=0, metavar="N",
        help="list each row's top N operators (default: %(default)s: no profile)",
    )  # fmt: skip
    p.add_argument(
        "--json", type=Path, metavar="FILE", help="write the figures to FILE (default: print only)"
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line (see build_parser)."""
    return build_parser().parse_args(argv)


def contenders(args: argparse.Namespace) -> tuple[list[Contender], int | None]:
    """Build the models to compare (all from one seed) and the index of the reference."""
    overrides: dict[str, Any] = {
        "mixer": args.mixer,
        "norm": args.norm,
        "act": args.act,
        "img_size": args.img_size,
    }
    if args.mixer and len(args.mixer) == 1:
        overrides["mixer"] = args.mixer[0]
    ours = create_model(args.model, **overrides)
    rows: list[Contender] = []
    twin = None if args.no_timm else timm_twin(args.model, args.mixer, args.norm, args.act)
    fast = fast_settings(args.device, compile={"auto": None, "on": True, "off": False}[args.fast_compile])
    if args.fast_precision != "auto":
        fast = with_overrides(fast, precision=args.fast_precision)
    if twin is not None:
        dpr = preset_config(args.model)["drop_path_rate"]
        for settings in [Settings()] + ([fast] if args.timm_same and args.fast else []):
            model, side = build_timm_twin(twin, dpr)
            label = f"timm {twin}" if side is None else f"timm MetaFormer ({twin} stages, {side} px)"
            rows.append(Contender(label, model, settings, img_size=side))
    base = Settings(args.precision, args.channels_last, args.compile)
    rows.append(Contender(f"ours {args.model}", ours, base))
    if args.fast:
        rows.append(Contender(f"ours {args.model}", copy.deepcopy(ours), fast))
    for c in rows:
        c.model.to(args.device)
    # the reference: timm's twin, else (when there is more than one row) our model with the base settings
    return rows, 0 if twin is not None or len(rows) > 1 else None


def _table(record: dict[str, Any]) -> str:
    lines = [
        f"\n{record['mode']}: images/s (median of rounds), ratio to {record['reference'] or 'n/a'} (median, range)",
        "| model | settings | img/s | ratio | peak MiB | GFLOP/s |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in record["rows"]:
        ratio = (
            "1 (ref)"
            if "median_ratio" not in r
            else f"{r['median_ratio']:.2f} ({min(r['ratios']):.2f}-{max(r['ratios']):.2f})"
        )
        if record["reference"] is None:
            ratio = "-"
        peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        row = f"| {r['name']} | {r['settings']} | {r['median_img_per_s']:.2f} | {ratio} | {peak} | {r['gflops']:.0f} |"
        lines.append(row)
    for r in record["rows"]:
        if "top_ops" in r:
            lines.append(f"\ntop operators, {r['name']} {r['settings']} (self time, one step):")
            lines += [
                f"  {o['share']:6.1%} {o['self_ms']:9.2f} ms {o['calls']:5d}x  {o['op']}"
                for o in r["top_ops"]
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True  # name compiled CPU kernels in the profile
    torch.manual_seed(args.seed)
    rows, reference = contenders(args)
    model = rows[-1].model
    size = args.img_size or model.img_size
    size = size if isinstance(size, int) else size[0]
    x = torch.randn(args.batch_size, model.in_chans, size, size, device=args.device)
    y = torch.randint(0, model.num_classes, (args.batch_size,), device=args.device)
    record: dict[str, Any] = {
        "command": " ".join(["python -m metaformer.bench", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(args.device),
        "device": args.device,
        "model": args.model,
        "batch_size": args.batch_size,
        "clock": args.clock,
        "img_size": size,
        "gmacs": profile(copy.deepcopy(model).cpu(), img_size=size)["gmacs"],
        "results": [],
    }
    if args.peak:
        dtypes = {"fp32": torch.float32} | ({"bf16": torch.bfloat16} if bf16_supported(args.device) else {})
        record["matmul_peak_gflops"] = {
            k: round(matmul_peak_gflops(d, args.device), 1) for k, d in dtypes.items()
        }
        print("matrix-product peak, GFLOP/s:", record["matmul_peak_gflops"])
    print(
        f"{record['machine']}; {args.model} ({2 * record['gmacs']:.2f} GFLOP/img forward), batch {args.batch_size},"
        f" {size}px, device {args.device}"
    )
    if args.fast:
        ours, fast_row = rows[-2], rows[-1]  # same weights; the reference runs in eager float32
        cosine = logits_agreement(
            copy.deepcopy(ours.model), copy.deepcopy(fast_row.model), fast_row.settings, x
        )
        record["fast_logits_cosine"] = round(cosine, 6)
        print(f"fast path ({fast_row.settings.describe()}) logits vs float32: cosine similarity {cosine:.6f}")
    if args.clock == "cpu":
        print("images/s below are per second of this process's CPU time (--clock cpu), not of wall time")
    modes = ["infer", "train"] if args.mode == "both" else [args.mode]
    for mode in modes:
        outcomes = compare(
            rows,
            mode,
            x,
            y,
            warmup=args.warmup,
            rounds=args.rounds,
            iters=args.iters,
            profile=args.profile,
            clock=args.clock,
        )
        result = summary(mode, outcomes, reference)
        flop_per_img = 2 * record["gmacs"] * (TRAIN_FLOP_FACTOR if mode == "train" else 1)  # GFLOP
        for row in result["rows"]:
            row["gflops"] = round(row["median_img_per_s"] * flop_per_img, 1)
        record["results"].append(result)
        print(_table(result), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "python -m metaformer.bench"))
