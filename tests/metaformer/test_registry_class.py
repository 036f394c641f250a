"""The one registry class: shared by mixers, norms, activations and data sets, importable in any order."""

import subprocess
import sys
import textwrap

import pytest
from torch import nn

from mixers.registry import Registry

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_mixers_norms_acts_and_datasets_share_one_registry_class():
    from metaformer import ACTS, NORMS
    from metaformer.engine.data.build import DATASETS
    from mixers import MIXERS

    registries = {"mixer": MIXERS, "norm": NORMS, "act": ACTS, "dataset": DATASETS}
    assert all(type(r) is Registry and r.kind == kind for kind, r in registries.items())
    assert {"pool", "gn", "gelu", "synthetic"} <= {n for r in registries.values() for n in r.names()}


def test_register_twice_is_an_error_unless_override():
    reg = Registry("thing")
    reg.register("a", nn.Identity)
    reg.register("a", nn.Identity)  # the same object again is harmless (a module imported twice)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        reg.register("a", nn.ReLU)
    reg.register("a", nn.ReLU, override=True)
    assert reg.get("a") is nn.ReLU and "a" in reg and reg.names() == ["a"]


def test_unknown_name_and_import_path():
    reg = Registry("thing")
    reg.register("b", nn.Identity)
    reg.register("a", nn.ReLU)
    with pytest.raises(ValueError, match="unknown thing 'c'; registered: a, b$"):
        reg.get("c")
    assert reg.get("torch.nn:Tanh") is nn.Tanh and reg.get(nn.GELU) is nn.GELU
    with pytest.raises(ValueError, match="thing 'torch.nn:Nope': module 'torch.nn' has no attribute 'Nope'"):
        reg.get("torch.nn:Nope")


def test_mixers_and_metaformer_import_in_any_order():
    # One fresh interpreter; the project's modules are forgotten before each order is tried.
    script = textwrap.dedent(
        """
        import sys

        def forget():
            for name in [n for n in sys.modules if n.split(".")[0] in ("metaformer", "mixers")]:
                del sys.modules[name]

        for statement in [
            "import mixers; import metaformer; metaformer.create_model('poolformer_cpu')",
            "import metaformer; metaformer.create_model('poolformer_cpu'); import mixers; mixers.build_mixer",
            "from mixers import register_mixer",
            "import metaformer.model",
            "from metaformer.norms import build_norm",
        ]:
            forget()
            exec(statement)
        forget()
        import mixers
        assert not [n for n in sys.modules if n.startswith("metaformer")]  # the lower layer stands alone
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_every_public_name_of_metaformer_resolves():
    import metaformer

    assert all(getattr(metaformer, name) is not None for name in metaformer.__all__)
    assert callable(metaformer.profile) and not isinstance(metaformer.profile, type(metaformer))
    import metaformer.profile  # the submodule of the same name does not replace the function

    assert callable(metaformer.profile)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        metaformer.nope  # noqa: B018
