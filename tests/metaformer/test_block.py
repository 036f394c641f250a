"""The block's channels-last fast path computes what the NCHW convolutions compute, forward and backward."""

import copy

import pytest
import torch

from metaformer.block import MetaFormerBlock, channel_mlp, is_channels_last
from metaformer.norms import list_norms
from mixers import list_mixers

DIM, SIZE = 8, 5


def _forward_backward(block: MetaFormerBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    x = x.detach().clone().requires_grad_()
    out = block(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()  # a gradient that is not uniform
    return out.detach(), x.grad, {n: p.grad for n, p in block.named_parameters()}


def _assert_same(reference: MetaFormerBlock, x: torch.Tensor) -> None:
    fast = copy.deepcopy(reference).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert is_channels_last(x_cl)
    out, dx, grads = _forward_backward(reference, x)
    out_cl, dx_cl, grads_cl = _forward_backward(fast, x_cl)
    torch.testing.assert_close(out_cl, out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx_cl, dx, rtol=1e-4, atol=1e-5)
    assert grads_cl.keys() == grads.keys()
    for name, grad in grads.items():
        if grad is not None:
            torch.testing.assert_close(grads_cl[name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("norm", list_norms())
def test_channels_last_block_matches_nchw_for_every_norm(norm):
    torch.manual_seed(0)
    block = MetaFormerBlock(DIM, "pool", norm=norm, layer_scale_init=0.5, drop=0.0)
    _assert_same(block.train(), torch.randn(3, DIM, SIZE, SIZE))


@pytest.mark.parametrize("mixer", list_mixers())
def test_channels_last_block_matches_nchw_for_every_mixer(mixer):
    torch.manual_seed(0)
    block = MetaFormerBlock(DIM, mixer, resolution=(SIZE, SIZE), layer_scale_init=None, res_scale_init=1.0)
    _assert_same(block.eval(), torch.randn(2, DIM, SIZE, SIZE))


def test_fast_mlp_uses_the_convolution_weights():
    torch.manual_seed(0)
    block = MetaFormerBlock(DIM)
    assert block.mlp.fc1.weight.shape == (4 * DIM, DIM, 1, 1)  # checkpoints and MAC counts are unchanged
    x = torch.randn(2, DIM, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(channel_mlp(block.mlp, x), block.mlp(x), rtol=1e-5, atol=1e-5)
    assert channel_mlp(block.mlp, x).is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        block.mlp.fc2.weight.zero_()
        block.mlp.fc2.bias.fill_(1.0)
    assert torch.equal(channel_mlp(block.mlp, x), torch.ones_like(x))


def test_a_1x1_grid_runs_the_channel_mlp_as_linear_layers():
    torch.manual_seed(0)
    mlp = MetaFormerBlock(DIM).mlp
    reference = copy.deepcopy(mlp)
    x = torch.randn(3, DIM, 1, 1)  # NCHW-contiguous and channels-last at once
    convs: list[int] = []
    for conv in (mlp.fc1, mlp.fc2):
        conv.register_forward_hook(lambda *_: convs.append(1))
    results = []
    for run in (lambda v: channel_mlp(mlp, v), reference):
        v = x.clone().requires_grad_()
        out = run(v)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), v.grad))
    assert not convs  # the convolutions' weights ran as linear layers
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(mlp.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_layout_detection():
    assert not is_channels_last(torch.randn(2, 3, 4, 4))
    assert is_channels_last(torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last))
    assert is_channels_last(torch.randn(2, 3, 1, 1))  # a 1x1 grid: both layouts are the same memory
    assert not is_channels_last(torch.randn(2, 3, 4))
