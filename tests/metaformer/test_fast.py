"""The fast path: settings chosen from the hardware, and logits that agree with float32."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metaformer import create_model
from metaformer.bench.throughput import logits_agreement
from metaformer.fast import (
    Settings,
    bf16_supported,
    fast_settings,
    prepare_input,
    prepare_model,
    resolve_precision,
    with_overrides,
)


def test_fast_settings_follow_the_hardware():
    s = fast_settings("cpu", compile=False)
    assert s.channels_last and not s.compile
    assert s.precision == ("bf16" if bf16_supported("cpu") else "fp32")
    assert with_overrides(s, compile=True, precision=None).compile
    assert Settings("bf16", True, True).describe() == "bf16+channels_last+compile"
    assert Settings().describe() == "fp32"


def test_auto_precision_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    import metaformer.fast as fast

    monkeypatch.setattr(fast, "bf16_supported", lambda device: False)
    assert resolve_precision("auto", "cpu") == "fp32"  # emulated bf16 is far slower than float32
    assert resolve_precision("bf16", "cpu") == "bf16"  # an explicit choice is kept
    monkeypatch.setattr(fast, "bf16_supported", lambda device: True)
    assert resolve_precision("auto", "cpu") == "bf16" and fast_settings("cpu").precision == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"


def test_prepare_puts_weights_and_inputs_in_channels_last():
    model = create_model("poolformer_cpu")
    prepare_model(model, Settings("fp32", channels_last=True))
    assert model.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = prepare_input(torch.randn(2, 1, 28, 28), Settings(channels_last=True))
    assert x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "mixer", ["pool", ["pool", "pool", "attn", "attn"], ["fft", "mlp", "random", "dwconv"], "sepconv"]
)
def test_fast_logits_agree_with_float32(mixer):
    torch.manual_seed(0)
    reference = create_model("poolformer_cpu", mixer=mixer)
    candidate = create_model("poolformer_cpu", mixer=mixer)
    candidate.load_state_dict(reference.state_dict())
    x = torch.randn(8, 1, 28, 28)
    cosine = logits_agreement(reference, candidate, fast_settings("cpu", compile=False), x)
    assert cosine >= 0.999


def test_agreement_detects_different_weights():
    torch.manual_seed(0)
    a, b = create_model("poolformer_cpu"), create_model("poolformer_cpu")
    assert logits_agreement(a, b, Settings(), torch.randn(8, 1, 28, 28)) < 0.99


@pytest.mark.slow
def test_compiled_fast_path_agrees_with_float32():
    torch.manual_seed(0)
    tiny = dict(depths=(1, 1, 1, 1))  # one block per stage: every kind of kernel, less to trace
    reference = create_model("poolformer_cpu", **tiny)
    candidate = create_model("poolformer_cpu", **tiny)
    candidate.load_state_dict(reference.state_dict())
    settings = fast_settings("cpu", compile=True)
    assert logits_agreement(reference, candidate, settings, torch.randn(4, 1, 28, 28)) >= 0.999


def test_inference_copy_is_bf16_and_leaves_the_model_in_float32():
    from metaformer.fast import prepare_inference

    model = create_model("poolformer_cpu")
    frozen = prepare_inference(model, Settings("bf16", channels_last=True))
    assert next(frozen.parameters()).dtype == torch.bfloat16 and not frozen.training
    assert next(model.parameters()).dtype == torch.float32
    x = prepare_input(torch.randn(2, 1, 28, 28), Settings("bf16", channels_last=True), inference=True)
    assert x.dtype == torch.bfloat16 and frozen(x).shape == (2, 10)


def test_compile_cache_lives_under_the_users_cache_folder(monkeypatch, tmp_path):
    from metaformer.fast import compile_cache_dir, compile_model

    monkeypatch.setenv(
        "TORCHINDUCTOR_CACHE_DIR", ""
    )  # records the variable, so compile_model's setting is undone
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache_dir() == tmp_path / "metaformer" / "torchinductor"
    compiled = compile_model(torch.nn.Linear(2, 2))  # lazy: nothing is compiled until the first call
    assert compiled is not None and (tmp_path / "metaformer" / "torchinductor").is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "metaformer" / "torchinductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache_dir() == tmp_path / "mine"


def test_compile_cache_is_ours_after_inductor_wrote_its_default(monkeypatch, tmp_path):
    """Inductor puts its /tmp default into TORCHINDUCTOR_CACHE_DIR when it first looks it up (importing timm does):
    that is not the user's choice, and compiled kernels still go under the user's cache folder."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir, default_cache_dir

    from metaformer.fast import compile_cache_dir, compile_model

    monkeypatch.setenv(
        "TORCHINDUCTOR_CACHE_DIR", ""
    )  # records the variable, so compile_model's setting is undone
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == default_cache_dir()  # what importing timm did in this process
    assert compile_cache_dir() == tmp_path / "metaformer" / "torchinductor"
    compile_model(torch.nn.Linear(2, 2))
    assert cache_dir() == str(tmp_path / "metaformer" / "torchinductor")  # where Inductor now writes


def test_bf16_detection_honours_an_avx2_restriction():
    """oneDNN restricted to AVX2 kernels (ONEDNN_MAX_CPU_ISA) has no bf16 arithmetic, so `auto` must pick float32."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    # metaformer/fast.py needs torch alone: loaded by its path, the fresh interpreter skips the package's imports
    # (timm, torchvision), a few seconds of a test about oneDNN's restriction.
    fast = Path(__file__).resolve().parents[2] / "metaformer" / "fast.py"
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('metaformer_fast', {str(fast)!r})\n"
        "module = sys.modules['metaformer_fast'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(module.resolve_precision('auto', 'cpu'))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "fp32"
