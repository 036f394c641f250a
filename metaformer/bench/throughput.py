"""Throughput of our model against timm's on identical inputs, in one process, alternating A B, B A.

Timing two models in one process, interleaved round by round, cancels most of what drifts on a shared machine
(other jobs, clocks, caches); the figure to trust is the median of the per-round ratios, not either absolute
images/s. A "step" is one inference forward (`infer`, through `prepare_inference`: bf16 weights on the fast path) or one
training step (`train`: forward under autocast, cross-entropy, backward, AdamW step).
"""

from __future__ import annotations

import contextlib
import ctypes
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaformer.fast import Settings, autocast, prepare_inference, prepare_input, prepare_model

Step = Callable[[], None]


@dataclass
class Contender:
    """One side of a comparison: a model, how it runs, and a name for the table."""

    name: str
    model: nn.Module
    settings: Settings
    img_size: int | None = None  # the side of this contender's input, where it differs from the others'


@dataclass
class Outcome:
    """Figures of one contender in one mode."""

    name: str
    settings: str
    img_per_s: list[float] = field(default_factory=list)
    peak_mib: float | None = None
    top_ops: list[dict[str, Any]] | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.img_per_s) if self.img_per_s else float("nan")


def make_step(c: Contender, mode: str, x: torch.Tensor, y: torch.Tensor) -> Step:
    """A closure running one step of `c` on the batch (x, y); the model is prepared (format, compile) once."""
    device = x.device
    if mode == "infer":
        frozen = prepare_inference(c.model, c.settings)
        xi = prepare_input(x, c.settings, inference=True)

        def infer() -> None:
            with torch.inference_mode():
                frozen(xi)

        return infer
    if mode != "train":
        raise ValueError(f"unknown mode {mode!r}; choose from: infer, train")
    model = prepare_model(c.model, c.settings)
    x = prepare_input(x, c.settings)
    c.model.train()
    optimizer = torch.optim.AdamW(c.model.parameters(), lr=1e-4)

    def train() -> None:
        with autocast(c.settings.precision, device):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return train


def synchronize(device: torch.device) -> None:
    """Wait for the device to finish its queued work (CUDA runs asynchronously; the CPU needs nothing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def time_steps(step: Step, iters: int, device: torch.device, clock: str = "wall") -> float:
    """Seconds for `iters` calls of `step`: wall-clock, or with `clock="cpu"` this process's CPU time, which on a
    CPU shared with other jobs leaves out the time the scheduler gave to them (use it with one thread, where no
    thread spins waiting for a descheduled sibling)."""
    now = CLOCKS[clock]
    synchronize(device)
    start = now()
    for _ in range(iters):
        step()
    synchronize(device)
    return now() - start


def _status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Hand memory freed by earlier steps back to the OS (glibc), so the next step's peak is its own."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_memory_mib(step: Step, device: torch.device) -> float | None:
    """Peak memory one step adds: CUDA's allocator peak, or on Linux CPUs the growth of the resident high-water mark.

    The CPU figure trims glibc's free lists, resets the kernel's high-water mark (`/proc/self/clear_refs`) and reads
    it after one step. None where unavailable.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    _release_free_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    base = _status_kib("VmRSS")
    step()
    peak = _status_kib("VmHWM")
    return None if base is None or peak is None else max(peak - base, 0) / 1024


def top_operators(step: Step, device: torch.device, top: int = 10) -> list[dict[str, Any]]:
    """The operators one step spends its time in, by self time (device time on CUDA), largest first.

    Compiled CPU kernels show under their own names only when Inductor was told to record them before compiling
    (`torch._inductor.config.cpp.enable_kernel_profile`, which `--profile` sets).
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step()
        synchronize(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr) > 0]
    total = sum(getattr(e, attr) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [
        {
            "op": e.key,
            "calls": e.count,
            "self_ms": round(getattr(e, attr) / 1000, 2),
            "share": round(getattr(e, attr) / total, 4),
        }
        for e in events[:top]
    ]


def compare(
    contenders: list[Contender],
    mode: str,
    x: torch.Tensor,
    y: torch.Tensor,
    warmup: int = 2,
    rounds: int = 5,
    iters: int = 2,
    profile: int = 0,
    clock: str = "wall",
) -> list[Outcome]:
    """Warm every contender up, then time them in turn for `rounds` rounds of `iters` steps, the order reversed
    every other round (A B, B A, ...);
    with `profile` > 0, also list each contender's top operators (one profiled step, after the timing)."""
    steps = [make_step(c, mode, resized(x, c.img_size), y) for c in contenders]
    outcomes = [Outcome(c.name, c.settings.describe()) for c in contenders]
    for step in steps:
        for _ in range(warmup):
            step()
    for outcome, step in zip(outcomes, steps, strict=True):
        outcome.peak_mib = peak_memory_mib(step, x.device)
    pairs = list(zip(outcomes, steps, strict=True))
    for r in range(rounds):
        for outcome, step in (
            pairs if r % 2 == 0 else reversed(pairs)
        ):  # A B, B A: no contender always goes first
            seconds = time_steps(step, iters, x.device, clock)
            outcome.img_per_s.append(iters * len(x) / seconds)
    if profile > 0:
        for outcome, step in zip(outcomes, steps, strict=True):
            outcome.top_ops = top_operators(step, x.device, profile)
    return outcomes


def resized(x: torch.Tensor, side: int | None) -> torch.Tensor:
    """`x` at `side` x `side` pixels (bilinear), or `x` itself where `side` is None or already its size."""
    if side is None or tuple(x.shape[-2:]) == (side, side):
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)


def matmul_peak_gflops(
    dtype: torch.dtype, device: torch.device | str, n: int = 2048, seconds: float = 1.0
) -> float:
    """Measured GFLOP/s of square matrix products in `dtype`: the ceiling a convolution network can approach."""
    device = torch.device(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    synchronize(device)
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        a @ b
        synchronize(device)
        calls += 1
    return 2 * n**3 * calls / (time.perf_counter() - start) / 1e9


def ratios(a: Outcome, b: Outcome) -> list[float]:
    """Per-round throughput ratios a/b (rounds are interleaved, so each pair saw the same machine state)."""
    return [p / q for p, q in zip(a.img_per_s, b.img_per_s, strict=True)]


@torch.no_grad()
def logits_agreement(
    reference: nn.Module, candidate: nn.Module, settings: Settings, x: torch.Tensor
) -> float:
    """Cosine similarity between `reference`'s float32 logits and `candidate`'s inference logits under `settings`."""
    ref = reference.eval()(x).float().flatten()
    out = prepare_inference(candidate, settings)(prepare_input(x, settings, inference=True)).float().flatten()
    return F.cosine_similarity(ref, out, dim=0).item()


def summary(mode: str, outcomes: list[Outcome], reference: int | None) -> dict[str, Any]:
    """A JSON-ready record of one mode's outcomes, with ratios to the reference contender."""
    rows = []
    for i, o in enumerate(outcomes):
        row: dict[str, Any] = {
            "name": o.name,
            "settings": o.settings,
            "img_per_s": [round(v, 2) for v in o.img_per_s],
            "median_img_per_s": round(o.median, 2),
            "peak_mib": None if o.peak_mib is None else round(o.peak_mib, 1),
        }
        if o.top_ops is not None:
            row["top_ops"] = o.top_ops
        if reference is not None and i != reference:
            r = ratios(o, outcomes[reference])
            row["ratios"] = [round(v, 3) for v in r]
            row["median_ratio"] = round(statistics.median(r), 3)
        rows.append(row)
    return {"mode": mode, "reference": None if reference is None else outcomes[reference].name, "rows": rows}
