"""The benchmark harness runs end to end on a small input; its figures are not checked (benchmarks are not tests)."""

import json
from functools import partial

import pytest
import torch

import metaformer.bench.__main__ as bench_main
from metaformer import create_model
from metaformer.bench.__main__ import build_timm_twin, main, timm_twin
from metaformer.bench.throughput import Outcome, matmul_peak_gflops, ratios, summary
from metaformer.errors import run_main
from metaformer.fast import fast_settings


def test_timm_twin_only_for_the_same_architecture():
    assert timm_twin("poolformer_s12", None, None, None) == "poolformer_s12"
    assert timm_twin("poolformer_m36", ["pool"], "gn", "gelu") == "poolformer_m36"
    assert timm_twin("poolformer_s12", ["pool", "pool", "attn", "attn"], None, None) is None
    assert timm_twin("poolformer_s12", None, "bn", None) is None
    assert timm_twin("poolformer_cpu", None, None, None) == "poolformer_cpu"
    assert timm_twin("poolformer_cpu", ["attn"], None, None) is None


@pytest.mark.parametrize("channels_last", [False, True])
def test_cpu_preset_stages_compute_what_timms_compute(channels_last):
    """With the same weights, our poolformer_cpu stages (eager, or the channels-last fast layout) give timm's
    MetaFormer stages' outputs and gradients; the reference's 56 px input meets them at the same 14x14 grid."""
    torch.manual_seed(0)
    reference, side = build_timm_twin("poolformer_cpu", 0.0)
    ours = create_model("poolformer_cpu")
    ours.stages.load_state_dict(reference.stages.state_dict())
    assert side == 56 and reference.stem(torch.randn(1, 1, side, side)).shape[-2:] == (14, 14)
    x = torch.randn(4, 32, 14, 14)
    if channels_last:
        ours.to(memory_format=torch.channels_last)
    outs, grads = [], []
    for model, inp in (
        (reference, x),
        (ours, x.contiguous(memory_format=torch.channels_last) if channels_last else x),
    ):
        inp = inp.clone().requires_grad_()
        out = model.stages(inp)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append([inp.grad] + [p.grad for p in model.stages.parameters()])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    for mine, theirs in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-5)


def test_ratios_pair_rounds_and_summary_takes_their_median():
    a, b = Outcome("a", "fp32", [2.0, 4.0, 9.0]), Outcome("b", "fp32", [1.0, 1.0, 3.0])
    assert ratios(a, b) == [2.0, 4.0, 3.0]
    record = summary("infer", [b, a], reference=0)
    assert record["reference"] == "b"
    assert record["rows"][1]["median_ratio"] == 3.0
    assert "median_ratio" not in record["rows"][0]


def test_harness_compares_with_timm_in_both_modes(tmp_path, capsys, monkeypatch):
    # --peak's real measurement on 256x256 products for 0.05 s (the command's 2048x2048 for 1 s per dtype costs
    # seconds of CPU and its figure is not checked here)
    monkeypatch.setattr(bench_main, "matmul_peak_gflops", partial(matmul_peak_gflops, n=256, seconds=0.05))
    out = tmp_path / "bench.json"
    args = ["--img-size", "64", "--batch-size", "2", "--rounds", "2", "--iters", "1", "--warmup", "1"]
    assert (
        main([*args, "--fast", "--fast-compile", "off", "--threads", "1", "--peak", "--json", str(out)]) == 0
    )
    record = json.loads(out.read_text())
    assert record["img_size"] == 64 and record["fast_logits_cosine"] >= 0.999
    assert record["matmul_peak_gflops"]["fp32"] > 0 and 0.1 < record["gmacs"] < 0.2  # S12: 1.81 G at 224 px
    assert [r["mode"] for r in record["results"]] == ["infer", "train"]
    for result in record["results"]:
        names = [(r["name"], r["settings"]) for r in result["rows"]]
        assert names[0] == ("timm poolformer_s12", "fp32")
        assert names[1] == ("ours poolformer_s12", "fp32")
        assert names[2][0] == "ours poolformer_s12" and "channels_last" in names[2][1]
        for row in result["rows"]:
            assert len(row["img_per_s"]) == 2 and all(v > 0 for v in row["img_per_s"])
            assert row["gflops"] == pytest.approx(
                row["median_img_per_s"] * 2 * record["gmacs"] * (3 if result["mode"] == "train" else 1),
                rel=0.01,
                abs=0.06,  # gflops is rounded to 0.1
            )
        assert all(len(r["ratios"]) == 2 for r in result["rows"][1:])
    assert "| timm poolformer_s12 | fp32 |" in capsys.readouterr().out


def test_cpu_preset_is_timed_against_timms_metaformer_at_56_px(tmp_path):
    out = tmp_path / "bench.json"
    args = [
        "--model",
        "poolformer_cpu",
        "--batch-size",
        "4",
        "--rounds",
        "2",
        "--iters",
        "1",
        "--warmup",
        "1",
    ]
    assert main([*args, "--mode", "train", "--fast", "--fast-compile", "off", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["reference"] == "timm MetaFormer (poolformer_cpu stages, 56 px)"
    assert [r["settings"].split("+")[0] for r in result["rows"]] == [
        "fp32",
        "fp32",
        fast_settings("cpu").precision,
    ]


def test_without_a_twin_the_fast_row_is_compared_with_ours(tmp_path):
    out = tmp_path / "bench.json"
    args = [
        "--model",
        "poolformer_cpu",
        "--mixer",
        "attn",
        "--mode",
        "train",
        "--batch-size",
        "4",
        "--rounds",
        "2",
    ]
    args += ["--iters", "1", "--warmup", "1", "--precision", "bf16", "--fast", "--fast-compile", "off"]
    assert main([*args, "--fast-precision", "fp32", "--clock", "cpu", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    (result,) = record["results"]
    assert record["clock"] == "cpu" and result["reference"] == "ours poolformer_cpu"
    assert [r["settings"] for r in result["rows"]] == ["bf16", "fp32+channels_last"]
    assert len(result["rows"][1]["ratios"]) == 2


@pytest.mark.parametrize(
    "argv", [["--mixer", "nope"], ["--model", "poolformer_cpu", "--norm", "nope", "--mode", "infer"]]
)
def test_wrong_arguments_give_one_line_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run_main(lambda: main(argv), "python -m metaformer.bench")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m metaformer.bench: error: unknown") and "nope" in err and "\n" not in err


def test_harness_without_a_timm_twin_reports_ours_only(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--model", "poolformer_cpu", "--mixer", "pool", "pool", "attn", "attn", "--mode", "infer",
                 "--batch-size", "2", "--rounds", "1", "--iters", "1", "--warmup", "0", "--profile", "3",
                 "--json", str(out)]) == 0  # fmt: skip
    (result,) = json.loads(out.read_text())["results"]
    assert result["reference"] is None and [r["name"] for r in result["rows"]] == ["ours poolformer_cpu"]
    ops = result["rows"][0]["top_ops"]
    assert len(ops) == 3 and ops[0]["self_ms"] >= ops[-1]["self_ms"] > 0
    assert 0 < sum(o["share"] for o in ops) <= 1 and all(o["calls"] >= 1 for o in ops)


def test_unknown_model_is_an_argparse_error():
    with pytest.raises(SystemExit) as e:
        main(["--model", "poolformer_x"])
    assert e.value.code == 2
