"""The mixer registry: user registration, built-in names kept, unknown names, import paths."""

import sys
import textwrap

import pytest
import torch
from torch import nn

import mixers
from mixers import MIXERS, build_mixer, list_mixers, register_mixer

BUILTIN = {"pool", "attn", "mlp", "fft", "fnet", "identity", "random", "dwconv", "sepconv"}


def test_builtin_mixers_are_registered():
    assert set(list_mixers()) >= BUILTIN


def test_builtin_name_cannot_be_taken_by_accident():
    with pytest.raises(ValueError, match="'pool' is already registered"):
        register_mixer("pool", nn.Identity)


def test_unknown_name_lists_registered_names():
    with pytest.raises(ValueError) as e:
        build_mixer("poool", 8)
    msg = str(e.value)
    assert "unknown mixer 'poool'" in msg
    assert all(name in msg for name in BUILTIN)


def test_decorator_registration_from_user_code():
    @register_mixer("test_scaled")
    class Scaled(nn.Module):
        def __init__(self, dim, factor=2.0):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

    try:
        m = build_mixer("test_scaled", 4, factor=3.0)
        x = torch.ones(1, 4, 2, 2)
        assert torch.equal(m(x), 3 * x)
    finally:
        MIXERS._builders.pop("test_scaled")


def test_import_path_mixer(tmp_path, monkeypatch):
    (tmp_path / "my_mixers.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Negate(nn.Module):
                def __init__(self, dim, resolution=None):
                    super().__init__()
                    self.resolution = resolution

                def forward(self, x):
                    return -x
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    m = build_mixer("my_mixers:Negate", 4, resolution=(3, 3))
    assert m.resolution == (3, 3)  # a `resolution` parameter receives the stage's size
    assert torch.equal(m(torch.ones(1, 4, 3, 3)), -torch.ones(1, 4, 3, 3))
    sys.modules.pop("my_mixers", None)


@pytest.mark.parametrize(
    "path, message",
    [
        ("no_such_module_xyz:Thing", "cannot import module"),
        ("mixers.pooling:Nope", "has no attribute 'Nope'"),
    ],
)
def test_bad_import_path_is_a_clear_error(path, message):
    with pytest.raises(ValueError, match=message):
        build_mixer(path, 4)


def test_wrong_option_names_the_mixer():
    with pytest.raises(ValueError, match="mixer 'pool' rejected options \\['head_dim'\\]"):
        build_mixer("pool", 4, head_dim=32)


def test_mixers_package_imports_nothing_from_metaformer():
    import ast
    import pathlib

    for file in pathlib.Path(mixers.__file__).parent.glob("*.py"):
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom | ast.Import):  # one-way: metaformer builds on mixers
                modules = (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                )
                assert not any(m.startswith(("metaformer", "analysis")) for m in modules), file


def test_sepconv_takes_any_registered_activation():
    from metaformer import create_model, list_acts

    for act in list_acts():  # starrelu and squared_relu too, as for the channel MLP
        mixer = build_mixer("sepconv", 8, act=act)
        assert mixer(torch.randn(1, 8, 4, 4)).shape == (1, 8, 4, 4)
    assert type(build_mixer("sepconv", 8, act="starrelu").act).__name__ == "StarReLU"
    with pytest.raises(ValueError, match="mixer 'sepconv': unknown act 'swish'; registered: gelu"):
        build_mixer("sepconv", 8, act="swish")
    options = {"sepconv": {"act": "starrelu"}}
    model = create_model("poolformer_cpu", mixer="sepconv", mixer_options=options, in_chans=3, num_classes=10)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
