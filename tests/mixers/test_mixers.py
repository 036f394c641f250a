"""Each token mixer: NCHW in, same shape out, and the computation it promises."""

import pytest
import torch
import torch.nn.functional as F

from mixers import build_mixer, list_mixers
from mixers.conv import DepthwiseConv2d

RES = (6, 5)


@pytest.mark.parametrize("name", sorted(list_mixers()))
def test_mixer_keeps_shape_and_backpropagates(name):
    torch.manual_seed(0)
    m = build_mixer(name, 32, resolution=RES)
    x = torch.randn(2, 32, *RES, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", sorted(list_mixers()))
def test_mixer_runs_in_channels_last_memory_with_the_same_result(name):
    torch.manual_seed(0)
    m = build_mixer(name, 32, resolution=RES)
    x = torch.randn(2, 32, *RES)
    expected = m(x)
    m.to(memory_format=torch.channels_last)  # what the fast path and trainer.channels_last do
    y = m(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(y, expected, atol=1e-5)


def test_pool_is_average_minus_input_without_counting_padding():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = build_mixer("pool", 1)(x)
    # top-left corner: mean of the 2x2 neighbourhood inside the image (padding not counted)
    assert y[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 4 + 5) / 4 - 0)
    assert y[0, 0, 1, 1].item() == pytest.approx(x[0, 0, :3, :3].mean().item() - 5)


def test_pool_size_and_plain_average_option():
    x = torch.randn(1, 3, 9, 9)
    m = build_mixer("pool", 3, pool_size=5, subtract_input=False)
    expected = F.avg_pool2d(x, 5, 1, 2, count_include_pad=False)
    assert torch.allclose(m(x), expected)
    with pytest.raises(ValueError, match="odd"):
        build_mixer("pool", 3, pool_size=4)


def test_attention_matches_explicit_softmax_attention():
    torch.manual_seed(0)
    m = build_mixer("attn", 64).eval()
    assert m.num_heads == 2 and m.qkv.bias is None  # head_dim 32, qkv without bias by default
    x = torch.randn(2, 64, 3, 4)
    tokens = x.flatten(2).transpose(1, 2)
    q, k, v = m.qkv(tokens).view(2, 12, 3, 2, 32).permute(2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-2, -1) / 32**0.5).softmax(-1)
    out = m.proj((attn @ v).transpose(1, 2).reshape(2, 12, 64)).transpose(1, 2).reshape(2, 64, 3, 4)
    assert torch.allclose(m(x), out, atol=1e-5)
    assert build_mixer("attn", 64, qkv_bias=True).qkv.bias is not None


def test_attention_mixes_tokens_globally():
    m = build_mixer("attn", 32).eval()
    x = torch.randn(1, 32, 4, 4)
    x2 = x.clone()
    x2[..., 3, 3] += 1.0
    assert not torch.allclose(m(x)[..., 0, 0], m(x2)[..., 0, 0])


def test_spatial_fc_is_one_linear_layer_over_tokens():
    m = build_mixer("mlp", 4, resolution=(3, 3))
    assert m.fc.weight.shape == (9, 9)
    x = torch.randn(2, 4, 3, 3)
    assert torch.allclose(m(x), (x.flatten(2) @ m.fc.weight.t() + m.fc.bias).view_as(x), atol=1e-6)


def test_random_matrix_is_frozen_row_softmax_buffer():
    m = build_mixer("random", 4, resolution=(3, 3))
    assert list(m.parameters()) == []
    assert "random_matrix" in m.state_dict()
    w = m.random_matrix
    assert w.shape == (9, 9) and torch.allclose(w.sum(-1), torch.ones(9)) and (w > 0).all()
    x = torch.randn(2, 4, 3, 3)
    assert torch.allclose(m(x), torch.einsum("nm,bcm->bcn", w, x.flatten(2)).view_as(x), atol=1e-6)


def test_global_filter_multiplies_the_spectrum():
    m = build_mixer("fft", 2, resolution=(4, 6))
    assert m.complex_weight.shape == (2, 4, 4, 2)
    with torch.no_grad():
        m.complex_weight.zero_()
        m.complex_weight[..., 0] = 1.0  # K = 1 everywhere: the identity
    x = torch.randn(1, 2, 4, 6)
    assert torch.allclose(m(x), x, atol=1e-5)


def test_fnet_is_parameter_free_real_fft():
    m = build_mixer("fnet", 3)
    assert list(m.parameters()) == []
    x = torch.randn(1, 3, 4, 4)
    assert torch.allclose(m(x), torch.fft.fftn(x, dim=(1, 2, 3), norm="ortho").real, atol=1e-6)


@pytest.mark.parametrize("kernel_size", [3, 7])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (4, 4), (7, 7), (9, 9)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_conv_equals_torchs_convolution_on_every_map_size(kernel_size, size, channels_last):
    """The small-map matrix path (H*W <= k*k) and the convolution agree in value, gradient and memory layout."""
    torch.manual_seed(0)
    conv = DepthwiseConv2d(6, kernel_size).double()
    x = torch.randn(3, 6, *size, dtype=torch.double)
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x.requires_grad_()
    y = conv(x)
    ref = F.conv2d(x, conv.weight, conv.bias, padding=kernel_size // 2, groups=6)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(y, [x, conv.weight, conv.bias], g)
    expected = torch.autograd.grad(ref, [x, conv.weight, conv.bias], g)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=layout) and grads[0].is_contiguous(memory_format=layout)


def test_depthwise_conv_under_vmap_takes_the_convolution():
    """Packed seeds (torch.func.vmap over stacked weights) ask no layout questions: the convolution, per seed."""
    torch.manual_seed(0)
    convs = [DepthwiseConv2d(4, 7) for _ in range(2)]
    params, _ = torch.func.stack_module_state(convs)
    x = torch.randn(2, 3, 4, 2, 2)  # (seed, batch, C, H, W): a map small enough for the matrix path

    def one(p, xi):
        return torch.func.functional_call(convs[0], p, (xi,))

    out = torch.func.vmap(one)(params, x)
    for k, conv in enumerate(convs):
        torch.testing.assert_close(out[k], conv(x[k]))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_sepconv_scripts_to_the_convolution():
    torch.manual_seed(0)
    m = build_mixer("sepconv", 8).eval()
    x = torch.randn(2, 8, 2, 2)
    torch.testing.assert_close(torch.jit.script(m)(x), m(x))


def test_dwconv_and_sepconv_options():
    assert build_mixer("dwconv", 8, kernel_size=5).conv.kernel_size == (5, 5)
    sep = build_mixer("sepconv", 8)
    assert sep.dwconv.kernel_size == (7, 7) and sep.pwconv1.out_channels == 16


@pytest.mark.parametrize("name", ["mlp", "fft", "random"])
def test_resolution_bound_mixers_refuse_other_sizes(name):
    m = build_mixer(name, 4, resolution=(4, 4))
    with pytest.raises(ValueError, match=f"mixer '{name}' was built for a 4x4 feature map but received 5x5"):
        m(torch.randn(1, 4, 5, 5))


@pytest.mark.parametrize("name", ["mlp", "fft", "random"])
def test_resolution_bound_mixers_need_a_resolution(name):
    with pytest.raises(ValueError, match="bound to its stage's resolution"):
        build_mixer(name, 4)


def test_sepconv_names_follow_timm_and_loads_checkpoints_saved_before():
    torch.manual_seed(0)
    m = build_mixer("sepconv", 8, act="starrelu", act2="relu")
    assert list(dict(m.named_children())) == ["pwconv1", "act1", "dwconv", "act2", "pwconv2"]
    assert m.act is m.act1 and isinstance(m.act2, torch.nn.ReLU)
    old = {k.replace("act1.", "act."): v + 1 for k, v in m.state_dict().items()}  # the key before the rename
    fresh = build_mixer("sepconv", 8, act="starrelu", act2="relu")
    fresh.load_state_dict(old)
    assert torch.equal(fresh.act1.scale, m.act1.scale + 1)


def test_attention_proj_bias_is_an_option():
    assert build_mixer("attn", 64).proj.bias is not None  # the PoolFormer paper's hybrids
    caformer = build_mixer("attn", 64, proj_bias=False)  # CAFormer's
    assert caformer.proj.bias is None and caformer.qkv.bias is None and caformer.num_heads == 2
