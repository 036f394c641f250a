"""Multi-head self-attention over the H*W tokens of an NCHW feature map (MetaFormer baselines' attention)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mixers.registry import register_mixer


@register_mixer("attn")
class Attention(nn.Module):
    """Self-attention with head_dim 32 by default, qkv without bias, via scaled_dot_product_attention.

    `proj_bias=False` is CAFormer's output projection (timm's and sail-sg/metaformer's `Attention`); the default
    keeps the bias, as the PoolFormer paper's hybrids were built.
    """

    def __init__(
        self,
        dim: int,
        head_dim: int = 32,
        num_heads: int | None = None,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        proj_bias: bool = True,
    ) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.num_heads = num_heads or max(1, dim // head_dim)
        inner = self.num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(inner, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # B, N, C
        qkv = self.qkv(tokens).reshape(B, H * W, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, H * W, -1)))
        return out.transpose(1, 2).reshape(B, C, H, W)
