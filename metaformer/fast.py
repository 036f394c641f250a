"""The fast path: one switch that picks the quickest settings this hardware runs correctly.

`fast_settings(device)` resolves the switch into plain settings (channels-last memory, bf16 where the processor has
bf16 arithmetic, torch.compile where a compiler is there). `prepare_model` applies them for training (bf16 as
autocast over float32 master weights); `prepare_inference` for inference, where bf16 means bf16 weights: no
per-call weight casts, and norms, pooling and activations move half the bytes (about 1.2x over autocast on the
2-core AVX-512 CPU, experiments/BENCHMARKS.md). The training engine (`trainer.fast=true`) and the benchmark (`python -m metaformer.bench --fast`) both go
through here, so what is benchmarked is what trains.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_CHOICES = ("auto", *AUTOCAST_DTYPES)


@dataclass(frozen=True)
class Settings:
    """How a model runs: autocast precision, memory format, and whether it is compiled."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def describe(self) -> str:
        """A short label, e.g. 'bf16+channels_last+compile'."""
        parts = [self.precision] + ["channels_last"] * self.channels_last + ["compile"] * self.compile
        return "+".join(parts)


def bf16_supported(device: torch.device | str) -> bool:
    """True where bf16 matrix products run natively: a CUDA device that has them, or a CPU with AVX-512 BF16/AMX."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return (
        device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """`auto` is bf16 where `device` has native bf16, else fp32; other names pass through.

    Emulated bf16 is no bargain: on an AVX2 CPU without bf16 instructions a bf16-autocast training step of the CPU
    preset ran 10-15x slower than float32 (experiments/BENCHMARKS.md).
    """
    if precision != "auto":
        return precision
    return "bf16" if bf16_supported(device) else "fp32"


def compiler_available(device: torch.device | str) -> bool:
    """True where torch.compile can generate kernels: Triton on CUDA, a C++ compiler on the CPU."""
    if torch.device(device).type == "cuda":
        return True
    return shutil.which("g++") is not None or shutil.which("c++") is not None


def fast_settings(device: torch.device | str, compile: bool | None = None) -> Settings:
    """The fast path's settings for `device`; `compile=None` compiles where a compiler is available."""
    return Settings(
        precision=resolve_precision("auto", device),
        channels_last=True,
        compile=compiler_available(device) if compile is None else compile,
    )


def with_overrides(settings: Settings, **changes: object) -> Settings:
    """`settings` with the fields given (not None) replaced."""
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context for `precision` (fp32, bf16, fp16) on `device` (a no-op for fp32)."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def compile_cache_dir() -> Path:
    """Where compiled kernels are kept between runs: `$TORCHINDUCTOR_CACHE_DIR` when set, else
    `$XDG_CACHE_HOME/metaformer/torchinductor` (`~/.cache/...`), not torch's default under /tmp, which a reboot or a
    fresh container empties. Inductor writes its /tmp default into that variable the first time it looks its folder up
    (importing timm does), so the variable counts as the user's only when it names another folder."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen and os.path.abspath(chosen) != os.path.abspath(default_cache_dir()):
        return Path(chosen)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "metaformer" / "torchinductor"


def compile_model(model: nn.Module) -> nn.Module:
    """`torch.compile(model)` with Inductor's FX-graph and AOTAutograd caches kept in `compile_cache_dir()`, so that
    only the first run of a model (and shape, dtype, torch version) pays for compiling; later ones load the kernels."""
    cache = compile_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)  # read by Inductor whenever it looks a kernel up
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    return torch.compile(model)


def prepare_model(model: nn.Module, settings: Settings) -> nn.Module:
    """Apply the memory format in place and return the module to call (compiled when asked)."""
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    return compile_model(model) if settings.compile else model


def prepare_inference(model: nn.Module, settings: Settings) -> nn.Module:
    """A model for inference under `settings`: with bf16/fp16 a low-precision copy (the original keeps its float32
    weights), in eval mode, in the memory format asked, compiled when asked. Call it without autocast."""
    dtype = AUTOCAST_DTYPES[settings.precision]
    if dtype is not None:
        model = copy.deepcopy(model).to(dtype)
    return prepare_model(model.eval(), settings)


def prepare_input(x: torch.Tensor, settings: Settings, inference: bool = False) -> torch.Tensor:
    """Put an input batch in the memory format (and, for `prepare_inference` models, the dtype) expected."""
    if settings.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = AUTOCAST_DTYPES[settings.precision]
    return x.to(dtype) if inference and dtype is not None and x.is_floating_point() else x
