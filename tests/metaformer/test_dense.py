"""The dense-prediction backbone (official fork_feat), its weight loading, and torchvision's detector and segmenter."""

import pytest
import torch
import torch.nn.functional as F

from metaformer import create_model, load_pretrained
from metaformer.dense import build_retinanet, build_semantic_fpn, create_backbone

SMALL = {"depths": (1, 1, 1, 1), "dims": (16, 32, 48, 64)}
NO_DROP_PATH = {**SMALL, "drop_path_rate": 0.0}  # a deterministic loss curve


def randomise_norms(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_()
    return model


def test_backbone_returns_every_stage_through_its_own_norm():
    backbone = randomise_norms(create_backbone("poolformer_s12", **SMALL)).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        outs = backbone(x)
        raw = backbone.forward_intermediates(x, intermediates_only=True)
    assert [tuple(o.shape[1:]) for o in outs] == [(16, 32, 32), (32, 16, 16), (48, 8, 8), (64, 4, 4)]
    for out, stage, norm in zip(outs, raw, backbone.out_norms, strict=True):
        torch.testing.assert_close(out, norm(stage))
        assert isinstance(norm, torch.nn.GroupNorm)  # the stage's norm, as the official fork_feat
    assert backbone.num_classes == 0 and not any(
        n.startswith(("head.", "norm.")) for n in backbone.state_dict()
    )


def test_backbone_drops_stages_after_the_last_output():
    backbone = create_backbone("poolformer_cpu", out_indices=(0, 1, 2))
    assert len(backbone.stages) == 3 and backbone.feature_channels == [32, 64, 128]
    assert [o.shape[-1] for o in backbone(torch.randn(1, 1, 28, 28))] == [14, 7, 4]


def test_official_fork_feat_checkpoint_loads_with_its_norms(tmp_path, to_official):
    source = randomise_norms(create_backbone("poolformer_s12", **SMALL)).eval()
    official = to_official(source.state_dict())
    assert {"norm0.weight", "norm6.bias", "network.0.0.layer_scale_1"} <= set(official)
    torch.save({"state_dict": official}, tmp_path / "fork_feat.pth")
    target = create_backbone("poolformer_s12", **SMALL).eval()
    report = load_pretrained(target, tmp_path / "fork_feat.pth")
    assert report.layout == "official" and not report.missing and not report.unexpected
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(target(x), source(x), strict=True):
            torch.testing.assert_close(a, b)
    # the official detection / segmentation checkpoints: the backbone under `backbone.`, the rest ignored
    detector = {
        **{f"backbone.{k}": v for k, v in official.items()},
        "neck.lateral_convs.0.conv.weight": torch.zeros(1),
    }
    report = load_pretrained(create_backbone("poolformer_s12", **SMALL), detector)
    assert report.layout == "official" and report.ignored == ["neck.lateral_convs.0.conv.weight"]


def test_classification_checkpoint_loads_into_the_backbone():
    classifier = create_model("poolformer_s12", **SMALL)
    backbone = create_backbone("poolformer_s12", **SMALL)
    report = load_pretrained(backbone, classifier.state_dict())  # strict, yet no error
    assert sorted(report.missing) == sorted(
        f"out_norms.{i}.{p}" for i in range(4) for p in ("weight", "bias")
    )
    assert sorted(report.ignored) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert torch.equal(
        backbone.stages[3].blocks[0].mlp.fc2.weight, classifier.stages[3].blocks[0].mlp.fc2.weight
    )
    # a classification model still refuses a backbone checkpoint, as before
    with pytest.raises(ValueError, match="missing keys"):
        load_pretrained(create_model("poolformer_s12", **SMALL), backbone.state_dict())


def fixed_batch():
    torch.manual_seed(0)
    images = [torch.rand(3, 128, 128) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[16.0, 24.0, 80.0, 100.0]]), "labels": torch.tensor([1])},
        {
            "boxes": torch.tensor([[40.0, 8.0, 120.0, 60.0], [8.0, 70.0, 50.0, 120.0]]),
            "labels": torch.tensor([2, 1]),
        },
    ]
    return images, targets


def train(model, step, optimizer, steps=6):
    losses = []
    for _ in range(steps):
        loss = step()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_retinanet_trains_and_detects():
    torch.manual_seed(0)
    model = build_retinanet(
        num_classes=3, backbone_options=NO_DROP_PATH, fpn_channels=32, min_size=128, max_size=128
    ).train()
    images, targets = fixed_batch()
    losses = model(images, targets)
    assert set(losses) == {"classification", "bbox_regression"}
    sum(losses.values()).backward()
    assert all(
        p.grad is not None for n, p in model.named_parameters() if n.startswith("backbone.body.stages")
    )
    # SGD with momentum and clipping, as mmdetection trains RetinaNet
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    history = train(model, lambda: sum(model(images, targets).values()), optimizer)
    assert history[-1] < 0.99 * history[0], history
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for d in detections:
        assert set(d) == {"boxes", "scores", "labels"} and d["boxes"].shape[1:] == (4,)
        assert len(d["boxes"]) == len(d["scores"]) == len(d["labels"])


def test_detector_refuses_a_backbone_bound_to_one_input_size():
    with pytest.raises(ValueError, match="bound to one input size"):
        build_retinanet(3, backbone_options={**SMALL, "mixer": ["pool", "pool", "mlp", "mlp"]})


def test_semantic_fpn_trains_per_pixel():
    torch.manual_seed(0)
    model = build_semantic_fpn(
        num_classes=4, backbone_options=NO_DROP_PATH, fpn_channels=32, head_channels=32
    ).train()
    x = torch.randn(2, 3, 128, 128)
    labels = torch.zeros(2, 128, 128, dtype=torch.long)  # quadrants: a fixed per-pixel target
    labels[:, :64, 64:], labels[:, 64:, :64], labels[:, 64:, 64:] = 1, 2, 3
    logits = model(x)["out"]
    assert logits.shape == (2, 4, 128, 128)
    F.cross_entropy(logits, labels).backward()
    assert all(p.grad is not None for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = train(model, lambda: F.cross_entropy(model(x)["out"], labels), optimizer)
    assert history[-1] < 0.8 * history[0], history
