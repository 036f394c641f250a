"""Convolutional mixers: Table 5's depthwise convolution and ConvFormer's separable convolution."""

from __future__ import annotations

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torch.nn import functional as F

from mixers.acts import ACTS
from mixers.registry import register_mixer


def taps(height: int, width: int, kernel_size: int, device: torch.device) -> torch.Tensor:
    """(H*W, H*W) index of the kernel tap (ky * k + kx) that joins input position q to output position p under a
    same-padded k x k convolution, or k * k where none does: the map's convolution as one matrix per channel."""
    y, x = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    y, x = y.flatten(), x.flatten()
    dy = y[None, :] - y[:, None] + kernel_size // 2
    dx = x[None, :] - x[:, None] + kernel_size // 2
    inside = (dy >= 0) & (dy < kernel_size) & (dx >= 0) & (dx < kernel_size)
    return torch.where(inside, dy * kernel_size + dx, kernel_size * kernel_size)


class _GradLayout(torch.autograd.Function):
    """Identity whose backward hands on its gradient in `memory_format`: CPU kernels (bmm, the activations'
    backward) slow down several times on a gradient laid out in neither NCHW nor NHWC order."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:  # noqa: ANN001
        ctx.memory_format = memory_format
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return grad.contiguous(memory_format=ctx.memory_format), None


def _transformed(x: torch.Tensor) -> bool:
    """Whether `x` is inside a torch.func transform (vmap over packed seeds), which asks no layout questions."""
    return torch._C._functorch.is_functorch_wrapped_tensor(x)


class DepthwiseConv2d(nn.Conv2d):
    """A same-padded depthwise k x k nn.Conv2d (its parameters and state dict). On CPU, a map no larger than the
    kernel (H*W <= k*k, as in the late stages) goes through one (H*W x H*W) matrix per channel built from the
    kernel: the same sums in no more multiply-adds, and a batched matmul whose backward is faster than oneDNN's
    depthwise weight gradient (experiments/BENCHMARKS.md, "Depthwise convolutions on small maps"). Set
    `small_map_matmul = False` on an instance for the convolution everywhere (python -m metaformer.bench.depthwise
    compares the two)."""

    small_map_matmul: bool = True

    def __init__(self, channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # TorchScript and FX symbolic tracing take the convolution: the choice is control flow on the input's
        # shape, which neither can record. torch.compile and export see it.
        if torch.jit.is_scripting():
            return self._conv_forward(x, self.weight, self.bias)
        return self._eager(x)

    @torch.jit.unused
    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        if is_fx_symbolic_tracing():
            return self._conv_forward(x, self.weight, self.bias)
        k = self.kernel_size[0]
        n, c, h, w = x.shape
        small = self.small_map_matmul and h * w <= k * k and k % 2 == 1
        if not small or x.device.type != "cpu" or _transformed(x):
            return self._conv_forward(x, self.weight, self.bias)
        layout = (
            torch.channels_last
            if x.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format
        )
        kernel = F.pad(self.weight.reshape(c, k * k), (0, 1))  # the extra column is the zero tap
        matrix = (
            kernel[:, taps(h, w, k, x.device)].transpose(1, 2).contiguous()
        )  # (C, in position, out position)
        rows = (
            _GradLayout.apply(x, layout).permute(1, 0, 2, 3).reshape(c, n, h * w).contiguous()
        )  # (C, N, in)
        out = _GradLayout.apply(torch.bmm(rows, matrix), torch.contiguous_format)  # (C, N, out position)
        if self.bias is not None:
            out = out + self.bias[:, None, None]
        return out.reshape(c, n, h, w).permute(1, 0, 2, 3).contiguous(memory_format=layout)


@register_mixer("dwconv")
class DepthwiseConv(nn.Module):
    """Depthwise k x k convolution with same padding."""

    def __init__(self, dim: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        self.conv = DepthwiseConv2d(dim, kernel_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@register_mixer("sepconv")
class SepConv(nn.Module):
    """ConvFormer's separable conv: 1x1 expand, activation, k x k depthwise, [activation,] 1x1 project (NCHW).

    `act` (the first activation, `act1`) and `act2` (after the depthwise conv; None: none, as ConvFormer) are any
    registered activation (mixers.acts.list_acts(): gelu, relu, silu, starrelu, ...). Module names follow timm's
    and sail-sg/metaformer's SepConv (`pwconv1`, `act1`, `dwconv`, `act2`, `pwconv2`) so their weights load as they
    are; checkpoints saved before the rename (`act.scale`) load too.
    """

    __jit_unused_properties__ = ["act"]  # the alias is for Python callers; TorchScript skips it

    def __init__(
        self,
        dim: int,
        expansion_ratio: float = 2.0,
        kernel_size: int = 7,
        act: str = "gelu",
        act2: str | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        try:
            act_layer = ACTS.get(act)
            act2_layer = ACTS.get(act2) if act2 is not None else nn.Identity
        except ValueError as e:
            raise ValueError(f"mixer 'sepconv': {e}") from None
        hidden = int(expansion_ratio * dim)
        self.pwconv1 = nn.Conv2d(dim, hidden, 1, bias=bias)
        self.act1 = act_layer()
        self.dwconv = DepthwiseConv2d(hidden, kernel_size, bias=bias)
        self.act2 = act2_layer()
        self.pwconv2 = nn.Conv2d(hidden, dim, 1, bias=bias)

    @property
    def act(self) -> nn.Module:
        """The first activation (`act1`), under its earlier name."""
        return self.act1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pwconv2(self.act2(self.dwconv(self.act1(self.pwconv1(x)))))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        for key in [k for k in state_dict if k.startswith(f"{prefix}act.")]:  # saved before act -> act1
            state_dict[f"{prefix}act1.{key.removeprefix(f'{prefix}act.')}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
