"""Parameter count and MACs of any model at a given input size, counted the way the paper's table counts them.

MACs are FLOPs / 2 from `torch.utils.flop_counter` over convolutions and matrix products (the paper used fvcore:
the same figure). Attention is run through its math kernel while counting so its two matrix products count too.
FFTs, pooling, norms and activations are not counted, as in the paper. Frozen buffers (the random mixer's matrix)
are not parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def profile(
    model: nn.Module, img_size: int | Sequence[int] | None = None, in_chans: int | None = None
) -> dict[str, float]:
    """Return {"params_m": parameters in millions, "gmacs": multiply-accumulates in billions} for one image."""
    size = img_size if img_size is not None else getattr(model, "img_size", 224)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    chans = in_chans if in_chans is not None else getattr(model, "in_chans", 3)
    param = next(model.parameters())
    x = torch.zeros(1, chans, h, w, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return {"params_m": count_params(model) / 1e6, "gmacs": counter.get_total_flops() / 2 / 1e9}
