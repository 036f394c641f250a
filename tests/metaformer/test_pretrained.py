"""Loading weights: timm's poolformer_*, the official release's layout, our own checkpoints; safe loading."""

import pytest
import timm
import torch
import torch.nn.functional as F

from metaformer import create_model, load_pretrained
from metaformer.pretrained import detect_layout


@pytest.fixture(scope="module")
def timm_s12():
    """timm's PoolFormer-S12 with every weight randomised, so no parameter is a trivial 0 or 1."""
    torch.manual_seed(0)
    model = timm.create_model("poolformer_s12", pretrained=False).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_scale" in name or "norm" in name:
                p.copy_(
                    torch.rand_like(p) * 0.5 + 0.5
                    if name.endswith("weight") or "scale" in name
                    else p.normal_()
                )
    return model


def official_logits(timm_model, x):
    """The official head: GroupNorm(1) over the whole last map, mean over H, W, then the linear layer."""
    feats = timm_model.forward_features(x)
    norm = timm_model.head.norm
    return timm_model.head.fc(F.group_norm(feats, 1, norm.weight, norm.bias, eps=1e-5).mean((-2, -1)))


def test_timm_weights_give_timm_features_and_official_logits(timm_s12):
    model = create_model("poolformer_s12").eval()
    report = load_pretrained(model, timm_s12.state_dict())
    assert report.layout == "timm" and not report.missing and not report.unexpected
    x = torch.randn(2, 3, 64, 64)  # any size: the same weights and code as at 224
    with torch.no_grad():
        assert (model.forward_features(x) - timm_s12.forward_features(x)).abs().max() < 1e-4
        assert (model(x) - official_logits(timm_s12, x)).abs().max() < 1e-4
        # the documented difference: timm pools first, then normalises
        assert (model(x) - timm_s12(x)).abs().max() > 1e-3


def test_official_release_layout(timm_s12, tmp_path, to_official):
    official = to_official(timm_s12.state_dict())
    assert "network.0.0.mlp.fc1.weight" in official and "network.0.0.layer_scale_1" in official
    assert detect_layout(official) == "official"
    path = tmp_path / "poolformer_s12.pth.tar"
    torch.save({"state_dict": official, "epoch": 300}, path)
    model = create_model("poolformer_s12").eval()
    assert load_pretrained(model, path).layout == "official"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - official_logits(timm_s12, x)).abs().max() < 1e-4


def test_own_checkpoint_round_trip_torch_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    src = create_model("poolformer_cpu", mixer=["pool", "pool", "random", "attn"])
    torch.save(
        {"model": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, tmp_path / "a.pt"
    )
    save_file(src.state_dict(), str(tmp_path / "a.safetensors"))
    for file in ("a.pt", "a.safetensors"):
        dst = create_model("poolformer_cpu", mixer=["pool", "pool", "random", "attn"])
        assert load_pretrained(dst, tmp_path / file).layout == "metaformer"
        for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
            assert torch.equal(a, b), k  # the frozen random matrix travels too


def test_mismatches_are_reported_clearly(timm_s12):
    sd = timm_s12.state_dict()
    with pytest.raises(ValueError, match=r"shape mismatches.*head\.weight.*num_classes"):
        load_pretrained(create_model("poolformer_s12", num_classes=10), sd)
    partial = {k: v for k, v in sd.items() if not k.startswith("stages.3")}
    with pytest.raises(ValueError, match=r"missing keys \['stages\.3"):
        load_pretrained(create_model("poolformer_s12"), partial)
    report = load_pretrained(create_model("poolformer_s12"), partial, strict=False)
    assert report.missing and all(k.startswith("stages.3") for k in report.missing)
    with pytest.raises(ValueError, match="unexpected keys"):
        load_pretrained(create_model("poolformer_s12"), {**sd, "extra.weight": torch.zeros(1)})


class Payload:
    """An arbitrary object: loading it must be refused (weights_only)."""


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": create_model("poolformer_cpu").state_dict(), "payload": Payload()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        load_pretrained(create_model("poolformer_cpu"), path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_pretrained(create_model("poolformer_cpu"), "/nonexistent/ckpt.pt")
